"""The web dashboard: ``GET /`` serves a single page (plain HTML + JS modules, no build step) that calls the
JSON API with the API key the user signs in with. Its static files (and the vendored uPlot charting library)
ship inside this package and are served from ``/dashboard/static/``; nothing is fetched from elsewhere."""
from service.dashboard.router import STATIC_DIR, router

__all__ = ["STATIC_DIR", "router"]
