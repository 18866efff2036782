# One image, both binaries: kbeast-operator (the entrypoint) and kbeast-query (the query pods
# name it as their command). One image to mirror, scan and pin; the query code is small.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/install-build-deps.sh \
 && CARGO_TARGET_DIR=/src/target scripts/build-binaries.sh --release \
 && mkdir -p /out \
 && cp target/release/kbeast-operator /out/ \
 && { cp target/release/kbeast-query /out/ 2>/dev/null || true; }

# distroless: no shell, no package manager; runs as the nonroot user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kbeast" \
      org.opencontainers.image.description="Kubernetes operator and query server for multi-tenant knowledge bases" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kbeast/kbeast"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# No HEALTHCHECK: Kubernetes probes check the processes.
ENTRYPOINT ["/usr/local/bin/kbeast-operator"]
CMD ["run"]
