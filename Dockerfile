# Builds the pwnbook binary and runs it on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin pwnbook

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pwnbook /usr/local/bin/pwnbook
ENV PWNBOOK_BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["pwnbook"]
CMD ["serve"]
