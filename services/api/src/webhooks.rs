//! Webhook deliveries: one worker per webhook follows its organization's log from a stored
//! checkpoint and POSTs each matching event object, signed, in log order. An event is retried
//! (exponential backoff, capped) until the receiver answers 2xx, and only then does the
//! checkpoint move past it: delivery is at least once and in order, and a restart resumes at the
//! checkpoint. Every attempt is logged in `webhook_deliveries`.
//!
//! Several server processes may share a database: a worker delivers only while it holds its
//! webhook's lease (a row in `webhook_checkpoints`, renewed before every attempt), so each event
//! goes out from one process at a time and in order. A clean shutdown releases the leases; a
//! crashed process's lease expires after the longest backoff plus a margin.
//!
//! The SSRF guard resolves the host and refuses loopback, private and link-local addresses both
//! when a webhook is saved and before every attempt (a DNS answer can change in between).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use pwnbook_events::{log, LogEvent, Store};
use pwnbook_projections::feed::{self, EventFilter};
use pwnbook_projections::webhooks::{self, WebhookRow};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::routes::events::event_object;
use crate::time::now_millis;

/// How often the dispatcher and idle workers look for work another process created.
const POLL: Duration = Duration::from_millis(250);
const PAGE: i64 = 100;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lease outlives its last renewal beyond the longest wait between two attempts.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// How deliveries behave.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    /// Allow loopback, private and link-local destinations (tests, internal receivers).
    pub allow_private: bool,
    /// Delay before the first retry; doubled for each further one, up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl DeliveryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2_u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.retry_base.saturating_mul(factor).min(self.retry_cap)
    }
}

/// Whether `ip` is an address webhooks may not reach by default.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_internal_v4(v4),
            None => {
                let first = v6.segments()[0];
                let second = v6.segments()[1];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                    || (first & 0xffc0) == 0xfe80 // link local fe80::/10
                    || (first & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated, still routed inside)
                    || (first == 0x2001 && second == 0x0db8) // documentation 2001:db8::/32
                    || (first == 0x2001 && second == 0x0002 && v6.segments()[2] == 0) // benchmarking 2001:2::/48
                    || (first == 0x0064 && second == 0xff9b && v6.segments()[2] == 1) // local-use NAT64 64:ff9b:1::/48
                    || v6.segments()[..4] == [0x0100, 0, 0, 0] // discard-only 100::/64
            }
        },
    }
}

/// The IPv4 address an IPv6 address carries: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
        return Some(low());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// Loopback, private and link-local, and every other special-purpose range that is not a
/// public destination (IANA's IPv4 special-purpose registry): such an address reaches a
/// network's inside, or nothing a webhook should call.
fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network" 0.0.0.0/8
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation 192.0.2.0/24
        || (a == 198 && b == 51 && c == 100) // documentation 198.51.100.0/24
        || (a == 203 && b == 0 && c == 113) // documentation 203.0.113.0/24
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved 240.0.0.0/4
}

/// The delivery client's resolver: the addresses a delivery connects to are the ones checked
/// here, so a host that answers a public address to the guard and an internal one to the
/// connection (DNS rebinding) gets nothing to connect to.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| allow_private || !is_internal(address.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// Refuses a URL whose host resolves to an internal address (unless `allow_private`). A URL
/// that does not parse is left to the aggregate's validation.
pub async fn guard(url: &str, allow_private: bool) -> Result<(), ApiError> {
    let Ok(parsed) = reqwest::Url::parse(url.trim()) else { return Ok(()) };
    if allow_private {
        return Ok(());
    }
    let refused = || {
        ApiError::validation(
            "url",
            "must not point to a loopback, private, link-local or other non-public address",
        )
    };
    let Some(host) = parsed.host_str() else { return Ok(()) };
    let port = parsed.port_or_known_default().unwrap_or(80);
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
    let addresses: Vec<IpAddr> = match literal {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| ApiError::validation("url", "the host does not resolve"))?
            .map(|address| address.ip())
            .collect(),
    };
    if addresses.is_empty() || addresses.into_iter().any(is_internal) {
        return Err(refused());
    }
    Ok(())
}

/// The event filter a webhook's `events` list stands for.
fn filter_for(events: &[String]) -> EventFilter {
    let mut filter = EventFilter::default();
    if events.iter().any(|e| e == "*") {
        return filter;
    }
    for event in events {
        match event.strip_suffix(".*") {
            Some(prefix) => filter.type_prefixes.push(format!("{prefix}.")),
            None => filter.types.push(event.clone()),
        }
    }
    filter
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Stable per (webhook, event), so a receiver can drop the duplicates of at-least-once delivery,
/// and of the documented ID shape: 10 characters of the event's time, then 10 of a hash of the
/// pair (where a resource ID has random ones).
fn delivery_id(webhook_id: &str, event: &LogEvent) -> String {
    let digest = Sha256::digest(format!("{webhook_id}/{}", event.event_id).as_bytes());
    let mut high = [0u8; 16];
    high.copy_from_slice(&digest[..16]);
    // A ULID's random part is its low 80 bits.
    let hashed = u128::from_be_bytes(high) >> 48;
    let ulid = ulid::Ulid::from_parts(u64::try_from(event.recorded_at).unwrap_or(0), hashed);
    format!("dlv_{}", &ulid.to_string().to_ascii_lowercase()[..20])
}

#[derive(Clone)]
struct Context {
    /// This dispatcher's name in leases.
    owner: String,
    store: Store,
    client: reqwest::Client,
    policy: DeliveryPolicy,
    head: watch::Receiver<i64>,
    shutdown: watch::Receiver<bool>,
}

/// Starts the dispatcher: it keeps one worker per webhook until `shutdown`, then waits for the
/// workers to release their leases (the returned task ends then).
pub fn spawn(
    store: Store,
    policy: DeliveryPolicy,
    head: watch::Receiver<i64>,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ApiError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        // A redirect could lead past the SSRF guard.
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(GuardedResolver { allow_private: policy.allow_private }))
        .build()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let owner = ulid::Ulid::new().to_string();
    let context = Context { owner, store, client, policy, head, shutdown };
    Ok(tokio::spawn(dispatch(context)))
}

async fn dispatch(mut context: Context) {
    let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        workers.retain(|_, worker| !worker.is_finished());
        match webhooks::all(context.store.pool()).await {
            Ok(hooks) => {
                for hook in hooks {
                    if let std::collections::hash_map::Entry::Vacant(slot) = workers.entry(hook.id.clone()) {
                        slot.insert(tokio::spawn(work(context.clone(), hook.id, hook.organization_id)));
                    }
                }
            }
            Err(error) => tracing::error!(%error, "listing webhooks failed; retrying"),
        }
        // Listed on a timer, not on every move of the log head (a query per sequencer batch): a
        // new webhook's worker starts within one poll and delivers from its own checkpoint.
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = context.shutdown.changed() => break,
        }
    }
    for (_, worker) in workers {
        let _ = worker.await;
    }
}

/// Why a worker stopped delivering.
enum Stop {
    /// The server is shutting down.
    Shutdown,
    /// The webhook was deleted.
    Gone,
    /// Another process holds the webhook's lease.
    Leased,
}

async fn work(mut context: Context, webhook_id: String, organization_id: String) {
    loop {
        match deliver_pending(&mut context, &webhook_id, &organization_id).await {
            Ok(Some(Stop::Shutdown)) => break,
            Ok(Some(Stop::Gone)) => {
                tracing::info!(webhook = %webhook_id, "webhook deleted; its worker stops");
                break;
            }
            Ok(Some(Stop::Leased) | None) => {}
            Err(error) => tracing::error!(%error, webhook = %webhook_id, "webhook worker failed; retrying"),
        }
        tokio::select! {
            changed = context.head.changed() => if changed.is_err() { tokio::time::sleep(POLL).await },
            () = tokio::time::sleep(POLL) => {}
            _ = context.shutdown.changed() => break,
        }
    }
    if let Err(error) = release(&context, &webhook_id).await {
        tracing::warn!(%error, webhook = %webhook_id, "could not release the webhook lease; it expires");
    }
}

/// Delivers everything after the checkpoint up to the current head; `Some` when the worker
/// should stop.
async fn deliver_pending(
    context: &mut Context,
    webhook_id: &str,
    organization_id: &str,
) -> Result<Option<Stop>, ApiError> {
    loop {
        if *context.shutdown.borrow() {
            return Ok(Some(Stop::Shutdown));
        }
        let Some(hook) = webhooks::get(context.store.pool(), organization_id, webhook_id).await? else {
            return Ok(Some(Stop::Gone));
        };
        let Some(checkpoint) = lease(context, webhook_id).await? else {
            return Ok(Some(Stop::Leased));
        };
        let head = log::head(&context.store).await?;
        if head <= checkpoint {
            return Ok(None);
        }
        let page =
            feed::page(&context.store, organization_id, &filter_for(&hook.events), checkpoint, PAGE, head)
                .await?;
        for event in &page.events {
            if let Some(stop) = deliver(context, webhook_id, organization_id, event).await? {
                return Ok(Some(stop));
            }
            if !save_checkpoint(context, webhook_id, event.position).await? {
                return Ok(Some(Stop::Leased));
            }
        }
        if !save_checkpoint(context, webhook_id, page.scanned_to).await? {
            return Ok(Some(Stop::Leased));
        }
    }
}

/// Takes or renews this dispatcher's lease on the webhook and returns its checkpoint; `None`
/// while another process holds it. A new webhook starts right after its own creation.
async fn lease(context: &Context, webhook_id: &str) -> Result<Option<i64>, ApiError> {
    let store = &context.store;
    let created_at = log::position_of(store, "webhook", webhook_id, 1).await?.unwrap_or(0);
    let longest_wait = context.policy.retry_cap + REQUEST_TIMEOUT + LEASE_MARGIN;
    let now = now_millis();
    let until = now.saturating_add(i64::try_from(longest_wait.as_millis()).unwrap_or(i64::MAX));
    let checkpoint: Option<i64> = sqlx::query_scalar(
        "INSERT INTO webhook_checkpoints (webhook_id, position, leased_by, lease_until) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (webhook_id) DO UPDATE SET leased_by = excluded.leased_by, lease_until = excluded.lease_until \
         WHERE webhook_checkpoints.leased_by = excluded.leased_by OR webhook_checkpoints.lease_until < $5 \
         RETURNING position",
    )
    .bind(webhook_id)
    .bind(created_at)
    .bind(&context.owner)
    .bind(until)
    .bind(now)
    .fetch_optional(store.pool())
    .await?;
    Ok(checkpoint)
}

/// Moves the checkpoint while this dispatcher holds the lease; `false` when it lost it.
async fn save_checkpoint(context: &Context, webhook_id: &str, position: i64) -> Result<bool, ApiError> {
    let saved =
        sqlx::query("UPDATE webhook_checkpoints SET position = $1 WHERE webhook_id = $2 AND leased_by = $3")
            .bind(position)
            .bind(webhook_id)
            .bind(&context.owner)
            .execute(context.store.pool())
            .await?;
    Ok(saved.rows_affected() == 1)
}

/// Gives the lease up at once (clean shutdown, deleted webhook).
async fn release(context: &Context, webhook_id: &str) -> Result<(), ApiError> {
    sqlx::query("UPDATE webhook_checkpoints SET lease_until = 0 WHERE webhook_id = $1 AND leased_by = $2")
        .bind(webhook_id)
        .bind(&context.owner)
        .execute(context.store.pool())
        .await?;
    Ok(())
}

/// Attempts `event` until the receiver accepts it (`None`), backing off between attempts. The
/// webhook is re-read before each attempt, so a fixed URL or secret applies to the next one.
async fn deliver(
    context: &mut Context,
    webhook_id: &str,
    organization_id: &str,
    event: &LogEvent,
) -> Result<Option<Stop>, ApiError> {
    let body = serde_json::to_vec(&event_object(event)).map_err(|e| ApiError::Internal(e.to_string()))?;
    let delivery = delivery_id(webhook_id, event);
    let mut attempt: u32 = 0;
    loop {
        let Some(hook) = webhooks::get(context.store.pool(), organization_id, webhook_id).await? else {
            return Ok(Some(Stop::Gone));
        };
        if lease(context, webhook_id).await?.is_none() {
            return Ok(Some(Stop::Leased));
        }
        attempt += 1;
        let started = Instant::now();
        let outcome = attempt_once(context, &hook, &delivery, event, &body).await;
        let (status, error) = match &outcome {
            Ok(status) => (Some(i64::from(*status)), None),
            Err(error) => (None, Some(error.clone())),
        };
        let result = match &outcome {
            Ok(status) if (200..300).contains(status) => "delivered",
            Ok(_) => "rejected",
            Err(_) => "unreachable",
        };
        metrics::counter!("pwnbook_webhook_deliveries_total", "outcome" => result).increment(1);
        metrics::histogram!("pwnbook_webhook_delivery_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, delivery_id, event_id, event_type, position, \
             attempt, status_code, error, duration_ms, attempted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(ulid::Ulid::new().to_string())
        .bind(webhook_id)
        .bind(&delivery)
        .bind(&event.event_id)
        .bind(&event.event_type)
        .bind(event.position)
        .bind(i64::from(attempt))
        .bind(status)
        .bind(error)
        .bind(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX))
        .bind(now_millis())
        .execute(context.store.pool())
        .await?;
        if matches!(outcome, Ok(status) if (200..300).contains(&status)) {
            return Ok(None);
        }
        tokio::select! {
            () = tokio::time::sleep(context.policy.backoff(attempt)) => {}
            _ = context.shutdown.changed() => return Ok(Some(Stop::Shutdown)),
        }
    }
}

/// One POST; the receiver's status, or why there was none.
async fn attempt_once(
    context: &Context,
    hook: &WebhookRow,
    delivery: &str,
    event: &LogEvent,
    body: &[u8],
) -> Result<u16, String> {
    guard(&hook.url, context.policy.allow_private).await.map_err(|e| format!("refused: {e}"))?;
    let response = context
        .client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("x-pwnbook-event", &event.event_type)
        .header("x-pwnbook-delivery", delivery)
        .header("x-pwnbook-signature", signature(&hook.secret, body))
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognized() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.254",
            "198.51.100.7",
            "203.0.113.9",
            "240.0.0.1",
            "2001:db8::1",
            "2001:2::1",
            "64:ff9b:1:a00::1",
            "100::1",
            "fec0::1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
        ] {
            let Ok(ip) = internal.parse::<IpAddr>() else { panic!("{internal} is no address") };
            assert!(is_internal(ip), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "198.20.0.1",
            "192.0.3.1",
            "2606:4700::1111",
            "2001:db9::1",
            "2001:2:1::1",
        ] {
            let Ok(ip) = public.parse::<IpAddr>() else { panic!("{public} is no address") };
            assert!(!is_internal(ip), "{public}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = DeliveryPolicy {
            allow_private: false,
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_millis(500),
        };
        let delays: Vec<u128> = (1..=5).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
