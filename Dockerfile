# The `phoenix` image: flows (`phoenix run`, as the controller's Deployments start it) and the
# controller (`phoenix controller`, manifests/03-deployment.yaml).
#
#   docker build -t phoenix:latest .
#
# Multi-stage: the build stage has the Rust toolchain and librdkafka's build needs (a C
# toolchain, pkg-config, OpenSSL headers); the image has only the stripped binary (~47 MB,
# against ~335 MB with line tables) and what it links (glibc, libssl3, zlib) plus CA
# certificates, running as the unprivileged user 65532, as the pods' security context requires.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Symbols stripped at link time: the line tables are only for local debugging.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked -p phoenix-engine --bin phoenix \
 && cp target/release/phoenix /phoenix

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot \
 && mkdir -p /var/lib/phoenix && chown 65532:65532 /var/lib/phoenix
COPY --from=build /phoenix /usr/local/bin/phoenix
USER 65532:65532
WORKDIR /var/lib/phoenix
EXPOSE 9898
ENTRYPOINT ["phoenix"]
CMD ["--help"]
