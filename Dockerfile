# readstate: a static binary in an empty image.
#
#   docker build -t readstate .
#   docker run -p 8080:8080 -v readstate-data:/data \
#     -e READSTATE_AUTH__API_KEYS='[{"name":"chat","key_sha256":"...","scopes":["read","write"]}]' \
#     readstate
#
# The image listens on 0.0.0.0:8080, so it refuses to start without credentials
# (exit 64 naming `auth`): give it API keys or a JWT key (README, "Access"), or
# READSTATE_AUTH__ALLOW_UNAUTHENTICATED=true on a private network. Data lives in
# /data (SQLite and its commit log); mount a volume there. Probes belong to the
# orchestrator: /healthz (liveness) and /readyz (readiness), see deploy/.
#
# scripts/image assembles the same runtime image with buildah from a binary built
# by scripts/release, for machines that cannot pull base images.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --locked --profile dist --target x86_64-unknown-linux-musl --bin readstate \
 && mkdir -p /out/data \
 && cp target/x86_64-unknown-linux-musl/dist/readstate /out/readstate

FROM scratch
COPY --from=build /out/readstate /usr/local/bin/readstate
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
ENV READSTATE_HTTP__ADDR=0.0.0.0:8080 \
    READSTATE_STORAGE__URL=sqlite:///data/readstate.db \
    READSTATE_LOG__FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/readstate"]
CMD ["serve"]
