"""The service layer: domain logic between the routers and storage. Functions here take a session and only
flush; the request dependency (``service.api.deps``) commits or rolls back."""
