# invoice-gateway: one container on a home server or NAS (amd64 and arm64).
# The Debian packages come from deps/debian-runtime.txt, the same list `make run` installs.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

COPY deps/debian-runtime.txt /tmp/debian-runtime.txt
RUN apt-get update \
 && xargs -a /tmp/debian-runtime.txt apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY web ./web
RUN pip install .

RUN useradd --system --uid 1000 --user-group --home-dir /data gateway \
 && mkdir -p /data /rules /exports /config \
 && chown gateway:gateway /data /rules /exports
COPY rules/ /rules/
COPY docker/gateway.yaml /config/gateway.yaml

USER gateway
ENV GATEWAY_CONFIG=/config/gateway.yaml
VOLUME ["/data", "/rules", "/exports"]
EXPOSE 2525 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["invoice-gateway"]
CMD ["serve"]
