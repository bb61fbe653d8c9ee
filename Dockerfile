# authd: a secondary authoritative DNS server, as a container.
#
#   docker build -t authd .
#   docker run -d --name authd -p 53:53/udp -p 53:53/tcp -p 127.0.0.1:9853:9853 \
#     -v authd-state:/var/lib/authd \
#     -v "$PWD/authd.toml:/etc/authd/authd.toml:ro" -v "$PWD/keys:/etc/authd/keys:ro" authd
#   docker exec authd authd zone status
#
# It runs as the unprivileged user "authd". Port 53 inside the container: Docker (20.10 and
# later) sets net.ipv4.ip_unprivileged_port_start=0 in a container's own network namespace,
# so that just works. Elsewhere (Kubernetes, podman, --network host) give the pod
# `--sysctl net.ipv4.ip_unprivileged_port_start=53`, or listen on a port >= 1024 in the config
# and publish it as 53 (-p 53:5300/udp ...). `--cap-add NET_BIND_SERVICE` alone does not
# help a non-root user: Docker does not raise ambient capabilities.

# --- build: the package and its dependencies into a venv, the way the README installs it ---
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authd ./authd
RUN python -m venv /opt/authd \
    && /opt/authd/bin/pip install --no-cache-dir .

# --- run ----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="authd" \
      org.opencontainers.image.description="Secondary authoritative DNS server: AXFR/IXFR with TSIG, verified zones, last good copy served"
ENV PATH="/opt/authd/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/authd /opt/authd
RUN groupadd --system --gid 5353 authd \
    && useradd --system --uid 5353 --gid authd --home-dir /var/lib/authd --shell /usr/sbin/nologin authd \
    && install -d -o authd -g authd -m 0700 /var/lib/authd /run/authd \
    && install -d -m 0755 /etc/authd /etc/authd/zones /etc/authd/keys
COPY contrib/docker/authd.toml /etc/authd/authd.toml
COPY zones/example.test.zone /etc/authd/zones/example.test.zone
# `docker exec authd authd zone status` finds /etc/authd/authd.toml from here.
WORKDIR /etc/authd
VOLUME ["/var/lib/authd"]
EXPOSE 53/udp 53/tcp 9853/tcp
USER 5353:5353
# Liveness only: a stale zone whose primary is gone is authd doing its job, never restart it
# for that (/readyz and /metrics say how fresh the zones are).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9853/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["authd"]
CMD ["serve", "-c", "/etc/authd/authd.toml"]
