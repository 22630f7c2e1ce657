# syntax=docker/dockerfile:1
# pcsync: build in a full Rust image, run in a slim Debian one as a non-root user.

# ---- builder ----------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml/Cargo.lock change.
# (Cargo checks that every declared target exists, so the benchmark gets a stand-in too.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > benches/sync.rs \
    && cargo build --release --locked --no-default-features \
    && rm -rf src benches target/release/.fingerprint/pcsync-*

# Then the crate itself. The simulator (default feature) stays out of the production image.
COPY build.rs ./
COPY src ./src
COPY benches ./benches
COPY migrations ./migrations
COPY config ./config
RUN cargo build --release --locked --no-default-features \
    && strip target/release/pcsync

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin pcsync \
    && mkdir -p /app /data && chown pcsync /app /data
COPY --from=builder /build/target/release/pcsync /usr/local/bin/pcsync
# For reference; the same defaults are compiled into the binary.
COPY config/default.toml /app/config/default.toml
WORKDIR /app
USER 10001
# Mount the customer list here (customers.file), or set PCSYNC__CUSTOMERS__FILE.
ENV PCSYNC__CUSTOMERS__FILE=/data/customers.csv
# The worker (`pcsync run`) serves /metrics, /healthz and /livez here; `run --once` pushes to
# metrics.pushgateway_url or writes metrics.textfile instead.
ENV PCSYNC__METRICS__LISTEN=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["pcsync"]
CMD ["run"]
