# One image for every Backprop process: the API (`backprop api`), the training worker
# (`backprop worker`), migrations (`backprop migrate`) and the embedded mode (`backprop up`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BACKPROP_DATA_DIR=/data

WORKDIR /app

# Dependencies first (cached while only the code changes), then the code.
COPY pyproject.toml README.md ./
RUN mkdir -p engine service workers migrations backprop_client \
    && touch engine/__init__.py service/__init__.py workers/__init__.py migrations/__init__.py \
       backprop_client/__init__.py \
    && pip install . \
    && pip uninstall -y backprop \
    && rm -rf engine service workers migrations backprop_client
COPY engine ./engine
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
# the CLI's user commands live here: without it `backprop api` cannot start
COPY backprop_client ./backprop_client
RUN pip install --no-deps . && rm -rf build

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin backprop \
    && mkdir -p /data && chown backprop:backprop /data
USER backprop
VOLUME ["/data"]
EXPOSE 8000

# Health checks are per process (API: /readyz; worker: a Celery ping) in docker-compose.yml.
CMD ["backprop", "api", "--host", "0.0.0.0", "--port", "8000"]
