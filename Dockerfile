# stats-worker: the worker and its HTTP side (/health, /metrics, operator API) in one process.
# Build: docker build -t stats-worker .   Run: docker run -e DATABASE_URL=... -p 8080:8080 stats-worker

FROM python:3.11-slim-bookworm AS builder

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock file changes.
# --no-dev and no --extra: the embedded PostgreSQL (the "embedded" extra, which the dev
# group pulls in) stays out of the image, which always runs with a DATABASE_URL.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself, as a wheel (the SQL travels inside it as worker/sql).
COPY README.md ./
COPY sql ./sql
COPY worker ./worker
RUN uv sync --frozen --no-dev --no-editable


FROM python:3.11-slim-bookworm

RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid worker --no-create-home --shell /usr/sbin/nologin worker

# Owned by root: the worker can run the code but not change it.
COPY --from=builder /app/.venv /app/.venv

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:$PATH \
    PORT=8080

WORKDIR /app
USER 10001:10001
EXPOSE 8080

# Exec form: stats-worker is PID 1 and gets SIGTERM itself (it drains, then exits).
ENTRYPOINT ["stats-worker"]
CMD ["run"]
