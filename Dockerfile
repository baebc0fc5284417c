# Switchyard: the proxy (switchyard-proxy) and the control loop (switchyard). The proxy is the
# profile-guided release build of scripts/build-release (an instrumented build, a training run on
# loopback, the optimized build); the control loop is a plain release build. Both are built with
# the `fleet` feature (groups of proxies and replicated controllers on etcd), whose etcd client
# needs protoc to build. docs/deploy.md shows the proxy as a sidecar and as an ingress, and
# deploy/kubernetes/ runs them on Kubernetes.
#
#   docker build -t switchyard .
#   docker run -p 8080:8080 -p 9901:9901 -v $PWD/deploy/proxy.yaml:/etc/switchyard/proxy.yaml \
#     -v switchyard-proxy-state:/var/lib/switchyard-proxy switchyard
#
# The proxy keeps the last table it published in /var/lib/switchyard-proxy/state.json, so that a
# restarted proxy serves it at once (docs/config.md#state-file); give that directory a volume.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchyard-control --features fleet && scripts/build-release

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchyard \
    && mkdir -p /var/lib/switchyard-proxy && chown 10001 /var/lib/switchyard-proxy
COPY --from=build /src/target/pgo/switchyard-proxy /src/target/release/switchyard /usr/local/bin/
COPY deploy/proxy.yaml /etc/switchyard/proxy.yaml
USER 10001
# 8080: traffic; 9901: the proxy's admin API; 9900: the control API (`switchyard serve`).
EXPOSE 8080 9901 9900
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s \
    CMD curl -fsS http://127.0.0.1:9901/readyz || exit 1
ENTRYPOINT ["switchyard-proxy"]
CMD ["--config", "/etc/switchyard/proxy.yaml", "--state-file", "/var/lib/switchyard-proxy/state.json"]
