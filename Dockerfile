# Slim, non-root image of the service. Build: docker build -t insighthub-ml-engine .
# Run:   docker run -p 5000:5000 -v insighthub-artifacts:/srv/insighthub/artifacts insighthub-ml-engine
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INSIGHTHUB_ARTIFACTS_DIR=/srv/insighthub/artifacts

RUN useradd --create-home --uid 10001 insighthub
WORKDIR /srv/insighthub

# Dependencies first, from the lock, so code changes do not reinstall them.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-deps . \
    && mkdir -p "$INSIGHTHUB_ARTIFACTS_DIR" \
    && chown -R insighthub:insighthub /srv/insighthub

USER insighthub
EXPOSE 5000
VOLUME ["/srv/insighthub/artifacts"]

HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=2).status != 200)"

CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "5000", "--timeout-graceful-shutdown", "20"]
