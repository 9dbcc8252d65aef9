# keel's container image. Build: docker build -t keel .
# Run:   docker run -p 8000:8000 --env-file .env keel   (migrate first: ... keel db upgrade)
#
# BASE_IMAGE must be a Debian-based image with python3 (3.11+) and the venv module at the
# same path in both stages; the official slim image is the default.
ARG BASE_IMAGE=python:3.12-slim-bookworm

# --- build: uv from PyPI (hash-pinned), then the locked runtime dependencies and keel ---------
FROM ${BASE_IMAGE} AS build

# The build trusts the system certificate store, so a build behind a TLS-inspecting proxy can
# mount that proxy's bundle over it. Bytecode is compiled once, here: workers never compile.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_SYSTEM_CERTS=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/keel

WORKDIR /src
COPY requirements-tools.txt ./
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --require-hashes -r requirements-tools.txt

# Dependencies first: this layer is reused until uv.lock or pyproject.toml changes.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --no-cache --python python3

COPY README.md LICENSE ./
COPY src ./src
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable --no-cache --python python3

# --- runtime: the base image, the environment, nothing else -----------------------------------
FROM ${BASE_IMAGE}

# A fixed UID/GID, so volumes and policies can name it; no login shell, no password.
RUN groupadd --gid 10001 keel \
    && useradd --uid 10001 --gid 10001 --no-log-init --home-dir /var/lib/keel --create-home \
        --shell /usr/sbin/nologin keel

COPY --from=build /opt/keel /opt/keel

ENV PATH=/opt/keel/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEEL_ENV=production \
    KEEL_BIND=0.0.0.0 \
    PORT=8000

# keel's working directory holds its machine-shared state file (var/keel-state.sqlite3).
WORKDIR /var/lib/keel
USER 10001:10001
EXPOSE 8000

# /livez answers without touching the database or the cache; python, since there is no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('PORT', '8000'), timeout=4)"]

# gunicorn is PID 1 (exec form): SIGTERM reaches it and it drains its workers.
STOPSIGNAL SIGTERM
CMD ["keel", "serve"]
