//! A local Partner Center: Entra ID's token endpoints and the API endpoints pcsync uses, in
//! the wire format of the seed pages and `partner-center-api.md`, served over real HTTP on
//! loopback. Used by the tests, `pcsync demo`, `pcsync simulate` and the benchmark.
//!
//! - [`data`]: deterministic customers and their objects (one holds the seed pages' objects).
//! - `server`: the HTTP routes, authentication, throttling, faults and counters.
//! - this file: configuration, the world's state, mutations and the public handle.

pub mod audit;
pub mod data;
pub mod dates;
mod server;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub use audit::Actor;
pub use data::{CustomerData, OTHER_MPN_IDS, SEED_CUSTOMER_ID, SEED_MPN_ID};
use data::{Parts, Rng, Shape};

use crate::ratelimit::Gcra;

/// The partner tenant, app and secrets the simulator accepts. Not secrets of anyone's.
pub const SIM_TENANT_ID: &str = "5e3a1f0c-7b2d-4c8e-9f61-0a2b3c4d5e6f";
pub const SIM_CLIENT_ID: &str = "9c1d2e3f-4a5b-4c6d-8e7f-1a2b3c4d5e6f";
pub const SIM_CLIENT_SECRET: &str = "sim-client-secret";
pub const SIM_REFRESH_TOKEN: &str = "sim-refresh-token-initial";
/// The audience Partner Center's tokens must carry.
pub const PARTNER_CENTER_RESOURCE: &str = "https://api.partnercenter.microsoft.com";

/// The partner tenant a simulator is, with the app and secrets it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTenant {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

impl Default for SimTenant {
    fn default() -> Self {
        SimTenant {
            tenant_id: SIM_TENANT_ID.into(),
            client_id: SIM_CLIENT_ID.into(),
            client_secret: SIM_CLIENT_SECRET.into(),
            refresh_token: SIM_REFRESH_TOKEN.into(),
        }
    }
}

impl SimTenant {
    /// Partner tenant `n` of a simulator serving several: 0 is the default one, the others
    /// have GUIDs, an app and secrets of their own.
    pub fn numbered(n: u32) -> SimTenant {
        if n == 0 {
            return SimTenant::default();
        }
        let guid = |purpose: u64| Rng::derive(0x7465_6e61_6e74, purpose, u64::from(n)).uuid();
        SimTenant {
            tenant_id: guid(1).to_string(),
            client_id: guid(2).to_string(),
            client_secret: format!("sim-client-secret-{n}"),
            refresh_token: format!("sim-refresh-token-initial-{n}"),
        }
    }
}

/// Everything about a simulated Partner Center.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The partner tenant (see [`Simulator::start_tenants`] for several on one server).
    pub tenant: SimTenant,
    pub seed: u64,
    /// Generated customers (the seed customer among them), at most 100,000 by design.
    pub customers: u32,
    pub subscriptions_per_customer: u32,
    pub managed_services_per_customer: u32,
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    /// Whether a refresh token stays valid after it was exchanged for a new one.
    pub keep_rotated_refresh_tokens: bool,
    /// `links.next.uri` of the customer list as `/v1/customers?...` (true) or `/customers?...`.
    pub next_link_with_v1: bool,
    pub knobs: Knobs,
    /// The simulator's clock: generated dates count from the day it starts, activity records
    /// carry its time, and Microsoft's date-driven changes (roll-overs, expiries, new billing
    /// cycles) happen as it moves. Share it with the pass (`Settings::clock`) to move both.
    pub clock: crate::clock::Clock,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            tenant: SimTenant::default(),
            seed: 1,
            customers: 200,
            subscriptions_per_customer: 10,
            managed_services_per_customer: 5,
            access_token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: Duration::from_secs(90 * 24 * 3600),
            keep_rotated_refresh_tokens: true,
            next_link_with_v1: false,
            knobs: Knobs::default(),
            clock: crate::clock::Clock::system(),
        }
    }
}

/// What can be changed while the simulator runs (`PUT /_sim/knobs` or [`Simulator::set_knobs`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Knobs {
    /// Added to every API response.
    pub latency_ms: u64,
    /// Uniform random extra latency, 0 to this.
    pub jitter_ms: u64,
    /// Partner Center's budget per partner tenant; `None` = unlimited.
    pub requests_per_minute: Option<u32>,
    /// Requests admitted back to back before the per-minute rate applies; default rpm/60.
    pub burst: Option<u32>,
    pub faults: Vec<FaultRule>,
    /// How long a `hang` fault holds the response; default 300 s.
    pub hang_secs: Option<u64>,
    /// Answer every page of the customer list with this body, byte for byte (for instance a
    /// body Microsoft published, from `shared/pc-real/`); `None`: the simulated list.
    pub customer_list_body: Option<String>,
    /// Answer every customer's subscribed SKUs with this body, byte for byte; `None`: the
    /// simulated ones.
    pub subscribed_skus_body: Option<String>,
}

/// A fault injected into matching requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRule {
    pub kind: FaultKind,
    /// Chance per matching request; default 1.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Only requests about this customer.
    #[serde(default)]
    pub customer_id: Option<Uuid>,
    /// Only this endpoint.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// Only this many times, then the rule is spent; default unlimited.
    #[serde(default)]
    pub times: Option<u32>,
}

impl FaultRule {
    pub fn always(kind: FaultKind) -> FaultRule {
        FaultRule {
            kind,
            probability: None,
            customer_id: None,
            endpoint: None,
            times: None,
        }
    }

    pub fn for_customer(mut self, id: Uuid) -> FaultRule {
        self.customer_id = Some(id);
        self
    }

    pub fn on(mut self, endpoint: Endpoint) -> FaultRule {
        self.endpoint = Some(endpoint);
        self
    }

    pub fn times(mut self, n: u32) -> FaultRule {
        self.times = Some(n);
        self
    }

    pub fn with_probability(mut self, p: f64) -> FaultRule {
        self.probability = Some(p);
        self
    }

    /// `kind[:probability][@customer-id]`, e.g. `503:0.02`, `hang@c501c3c4-...`, `bom`.
    pub fn parse(text: &str) -> Result<FaultRule, String> {
        let (rest, customer) = match text.split_once('@') {
            Some((r, c)) => (
                r,
                Some(Uuid::parse_str(c).map_err(|_| format!("{c:?} is not a customer id"))?),
            ),
            None => (text, None),
        };
        let (kind, probability) = match rest.split_once(':') {
            Some((k, p)) => (
                k,
                Some(
                    p.parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or_else(|| format!("{p:?} is not a probability from 0 to 1"))?,
                ),
            ),
            None => (rest, None),
        };
        let kind = FaultKind::parse(kind)?;
        Ok(FaultRule {
            kind,
            probability,
            customer_id: customer,
            endpoint: None,
            times: None,
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 with Partner Center's error body.
    #[serde(rename = "500")]
    Status500,
    /// HTTP 503 with an empty body.
    #[serde(rename = "503")]
    Status503,
    /// No answer for `hang_secs`: slower than any sane timeout.
    Hang,
    /// A 200 whose JSON body is cut in the middle.
    Truncated,
    /// A 200 whose body is not JSON (an HTML error page from a proxy).
    Malformed,
    /// A UTF-8 byte-order mark before otherwise valid JSON.
    Bom,
    /// 401 code 900421: App+User call without an MFA claim.
    MfaRequired,
    /// HTTP 429 with `Retry-After: 1` and the throttling body, whatever the budget says.
    #[serde(rename = "429")]
    Status429,
    /// A 200 whose collection has no `items` at all: `{"totalCount": 0}`.
    NoItems,
    /// A 200 whose body is an empty object: `{}`.
    EmptyObject,
    /// A 200 whose `totalCount` is the real count but that carries only the first item.
    CountMismatch,
    /// A 302 to a page that answers an empty collection (a proxy or captive portal).
    Redirect,
    /// The first item of the collection sent twice (the customer list repeats a customer).
    Duplicate,
    /// A well-formed, consistent, empty collection: `{"totalCount": 0, "items": []}`, as a
    /// backend that lost its data for a moment would answer.
    Empty,
}

impl FaultKind {
    pub const ALL: [&'static str; 14] = [
        "500",
        "503",
        "hang",
        "truncated",
        "malformed",
        "bom",
        "mfa_required",
        "429",
        "no_items",
        "empty_object",
        "count_mismatch",
        "redirect",
        "duplicate",
        "empty",
    ];

    fn parse(text: &str) -> Result<FaultKind, String> {
        serde_json::from_value(Value::String(text.to_string())).map_err(|_| {
            format!(
                "unknown fault {text:?}; expected one of {}",
                FaultKind::ALL.join(", ")
            )
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Token,
    Customers,
    Subscriptions,
    ManagedServices,
    SubscribedSkus,
    AuditRecords,
    Control,
    Other,
}

/// Counters of what clients did, from `GET /_sim/stats` or [`Simulator::stats`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Requests by endpoint and HTTP status.
    pub requests: BTreeMap<Endpoint, BTreeMap<u16, u64>>,
    /// API requests (token and control endpoints excluded).
    pub api_requests: u64,
    /// 429 answers.
    pub throttled: u64,
    /// The most API requests in flight at once.
    pub max_concurrent: u64,
    /// Requests to the token endpoints.
    pub token_requests: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// API requests whose `MS-RequestId` an earlier request already carried: retries of one
    /// logical request, as Partner Center asks clients to send them.
    pub repeated_request_ids: u64,
}

impl Stats {
    pub fn count(&self, endpoint: Endpoint, status: u16) -> u64 {
        self.requests
            .get(&endpoint)
            .and_then(|m| m.get(&status))
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self, endpoint: Endpoint) -> u64 {
        self.requests
            .get(&endpoint)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }
}

/// A change to the simulated data (`POST /_sim/change` or [`Simulator::apply`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Sets one field of a subscription, by its wire name (`status`, `quantity`, ...).
    SetSubscriptionField {
        customer_id: Uuid,
        subscription_id: String,
        field: String,
        value: Value,
    },
    RemoveSubscription {
        customer_id: Uuid,
        subscription_id: String,
    },
    /// Adds a new subscription, or brings back `subscription` (a full object) if given.
    AddSubscription {
        customer_id: Uuid,
        #[serde(default)]
        subscription: Option<Map<String, Value>>,
    },
    RemoveManagedService {
        customer_id: Uuid,
        service_id: String,
    },
    AddManagedService {
        customer_id: Uuid,
    },
    /// The customer removed the partner: its calls answer 403 with code 20002.
    RemoveRelationship {
        customer_id: Uuid,
    },
    RestoreRelationship {
        customer_id: Uuid,
    },
    AddCustomer,
}

/// One thing a change did, as pcsync should later report it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mutation {
    pub customer_id: Uuid,
    /// `subscription`, `managed_service` or `customer`.
    pub entity: String,
    pub entity_id: String,
    /// `added`, `removed`, `changed`, `relationship_removed`, `relationship_restored`.
    pub kind: String,
    /// For `changed`: the wire name of the field.
    pub field: Option<String>,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimError {
    #[error("no customer {0}")]
    UnknownCustomer(Uuid),
    #[error("customer {0} has no subscription {1}")]
    UnknownSubscription(Uuid, String),
    #[error("customer {0} has no managed service {1}")]
    UnknownManagedService(Uuid, String),
    #[error("customer {0} already has every managed service of the catalogue")]
    CatalogueExhausted(Uuid),
    #[error("field {0:?} cannot be set (id is fixed)")]
    FixedField(String),
}

/// Request ids kept per generation.
const REQUEST_ID_GENERATION: usize = 100_000;

impl State {
    /// Adds the activity records of `done`, made by `actor` now.
    fn log(&self, done: &[Mutation], actor: &Actor) {
        if matches!(actor, Actor::System) || done.is_empty() {
            return;
        }
        let names: HashMap<Uuid, String> = {
            let world = lock(&self.world);
            done.iter()
                .filter_map(|m| {
                    world
                        .get_parts(&m.customer_id, Parts::PROFILE)
                        .map(|c| (m.customer_id, c.company_name))
                })
                .collect()
        };
        let mut audit = lock(&self.audit);
        for m in done {
            let number = audit.len() as u64 + 1;
            let name = names.get(&m.customer_id).map(String::as_str).unwrap_or("");
            if let Some(r) = audit::record(
                m,
                actor,
                number,
                self.config.clock.now(),
                name,
                &self.config.tenant.tenant_id,
            ) {
                audit.push(r);
            }
        }
    }

    /// Records an MS-RequestId; true if an earlier request carried it.
    fn seen_request_id(&self, id: &str) -> bool {
        let mut ids = lock(&self.request_ids);
        if ids[0].contains(id) || ids[1].contains(id) {
            return true;
        }
        if ids[0].len() >= REQUEST_ID_GENERATION {
            ids[1] = std::mem::take(&mut ids[0]);
        }
        ids[0].insert(id.to_string());
        false
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Generated(u32),
    Added(u32),
}

/// The simulated data: generated on demand, with changed customers kept whole.
struct World {
    shape: Shape,
    order: Vec<Uuid>,
    slots: HashMap<Uuid, Slot>,
    overrides: HashMap<Uuid, CustomerData>,
    relationship_removed: HashSet<Uuid>,
    added_customers: u32,
    /// Feeds new subscriptions' generator, so each added one differs.
    additions: u64,
    clock: crate::clock::Clock,
}

impl World {
    fn new(config: &SimConfig) -> World {
        let shape = Shape {
            seed: config.seed,
            base_day: config.clock.now().date_naive(),
            subscriptions_per_customer: config.subscriptions_per_customer,
            managed_services_per_customer: config.managed_services_per_customer,
        };
        let n = config.customers.max(1);
        let mut order = Vec::with_capacity(n as usize);
        let mut slots = HashMap::with_capacity(n as usize);
        for i in 0..n {
            let id = data::customer_id(&shape, i);
            order.push(id);
            slots.insert(id, Slot::Generated(i));
        }
        World {
            shape,
            order,
            slots,
            overrides: HashMap::new(),
            relationship_removed: HashSet::new(),
            added_customers: 0,
            additions: 0,
            clock: config.clock.clone(),
        }
    }

    /// Microsoft's date-driven changes up to now (not for the seed customer, whose objects
    /// are the seed pages' examples, verbatim).
    fn on_dates(&self, c: &mut CustomerData) {
        if c.id == data::seed_customer().id {
            return;
        }
        let now = self.clock.now();
        for sub in &mut c.subscriptions {
            dates::apply(sub, now);
        }
    }

    fn get(&self, id: &Uuid) -> Option<CustomerData> {
        self.get_parts(id, Parts::ALL)
    }

    /// The customer with only the asked-for parts filled in (changed customers come whole).
    fn get_parts(&self, id: &Uuid, parts: Parts) -> Option<CustomerData> {
        let mut c = match self.overrides.get(id) {
            Some(c) => c.clone(),
            None => match self.slots.get(id)? {
                Slot::Generated(i) => data::generate_customer_parts(&self.shape, *i, parts),
                Slot::Added(k) => data::generate_added_customer(&self.shape, *k),
            },
        };
        self.on_dates(&mut c);
        Some(c)
    }

    fn get_mut(&mut self, id: &Uuid) -> Result<&mut CustomerData, SimError> {
        if !self.overrides.contains_key(id) {
            let c = self.get(id).ok_or(SimError::UnknownCustomer(*id))?;
            self.overrides.insert(*id, c);
        }
        let now = self.clock.now();
        let seed = data::seed_customer().id;
        let c = self
            .overrides
            .get_mut(id)
            .ok_or(SimError::UnknownCustomer(*id))?;
        // What Microsoft did by now is part of the state a change starts from.
        if c.id != seed {
            for sub in &mut c.subscriptions {
                dates::apply(sub, now);
            }
        }
        Ok(c)
    }

    fn apply(&mut self, change: Change) -> Result<Vec<Mutation>, SimError> {
        let m = |customer_id: Uuid, entity: &str, entity_id: &str, kind: &str| Mutation {
            customer_id,
            entity: entity.into(),
            entity_id: entity_id.into(),
            kind: kind.into(),
            field: None,
            old: None,
            new: None,
        };
        match change {
            Change::SetSubscriptionField {
                customer_id,
                subscription_id,
                field,
                value,
            } => {
                if field == "id" {
                    return Err(SimError::FixedField(field));
                }
                let c = self.get_mut(&customer_id)?;
                let sub = c
                    .subscriptions
                    .iter_mut()
                    .find(|s| s.get("id").and_then(Value::as_str) == Some(&subscription_id))
                    .ok_or_else(|| {
                        SimError::UnknownSubscription(customer_id, subscription_id.clone())
                    })?;
                let old = sub.insert(field.clone(), value.clone());
                if old.as_ref() == Some(&value) {
                    return Ok(Vec::new());
                }
                Ok(vec![Mutation {
                    field: Some(field),
                    old,
                    new: Some(value),
                    ..m(customer_id, "subscription", &subscription_id, "changed")
                }])
            }
            Change::RemoveSubscription {
                customer_id,
                subscription_id,
            } => {
                let c = self.get_mut(&customer_id)?;
                let before = c.subscriptions.len();
                c.subscriptions
                    .retain(|s| s.get("id").and_then(Value::as_str) != Some(&subscription_id));
                if c.subscriptions.len() == before {
                    return Err(SimError::UnknownSubscription(customer_id, subscription_id));
                }
                Ok(vec![m(
                    customer_id,
                    "subscription",
                    &subscription_id,
                    "removed",
                )])
            }
            Change::AddSubscription {
                customer_id,
                subscription,
            } => {
                self.additions += 1;
                let mut rng = Rng::derive(self.shape.seed, 0xADD, self.additions);
                let base = self.shape.base_day;
                let c = self.get_mut(&customer_id)?;
                let sub =
                    subscription.unwrap_or_else(|| data::subscription(&mut rng, customer_id, base));
                let id = sub
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                c.subscriptions
                    .retain(|s| s.get("id").and_then(Value::as_str) != Some(&id));
                c.subscriptions.push(sub);
                Ok(vec![m(customer_id, "subscription", &id, "added")])
            }
            Change::RemoveManagedService {
                customer_id,
                service_id,
            } => {
                let c = self.get_mut(&customer_id)?;
                let before = c.managed_services.len();
                c.managed_services
                    .retain(|s| s.get("id").and_then(Value::as_str) != Some(&service_id));
                if c.managed_services.len() == before {
                    return Err(SimError::UnknownManagedService(customer_id, service_id));
                }
                Ok(vec![m(
                    customer_id,
                    "managed_service",
                    &service_id,
                    "removed",
                )])
            }
            Change::AddManagedService { customer_id } => {
                let c = self.get_mut(&customer_id)?;
                let svc = data::new_managed_service(c)
                    .ok_or(SimError::CatalogueExhausted(customer_id))?;
                let id = svc
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                c.managed_services.push(svc);
                Ok(vec![m(customer_id, "managed_service", &id, "added")])
            }
            Change::RemoveRelationship { customer_id } => {
                if !self.slots.contains_key(&customer_id) {
                    return Err(SimError::UnknownCustomer(customer_id));
                }
                self.relationship_removed.insert(customer_id);
                Ok(vec![m(
                    customer_id,
                    "customer",
                    &customer_id.to_string(),
                    "relationship_removed",
                )])
            }
            Change::RestoreRelationship { customer_id } => {
                if !self.slots.contains_key(&customer_id) {
                    return Err(SimError::UnknownCustomer(customer_id));
                }
                self.relationship_removed.remove(&customer_id);
                Ok(vec![m(
                    customer_id,
                    "customer",
                    &customer_id.to_string(),
                    "relationship_restored",
                )])
            }
            Change::AddCustomer => {
                let k = self.added_customers;
                self.added_customers += 1;
                let id = data::added_customer_id(&self.shape, k);
                self.order.push(id);
                self.slots.insert(id, Slot::Added(k));
                Ok(vec![m(id, "customer", &id.to_string(), "added")])
            }
        }
    }

    /// Changes a `fraction` of all subscriptions, one field each, chosen by `seed`: status
    /// flips, quantity edits, auto-renew flips, renewals (a later commitment end) and term
    /// changes. Deterministic for the same world and seed.
    fn mutate(&mut self, fraction: f64, seed: u64) -> Vec<Mutation> {
        let mut out = Vec::new();
        let mut rng = Rng::derive(seed, 0x5EED, self.shape.seed);
        let ids = self.order.clone();
        for id in ids {
            let Some(c) = self.get(&id) else { continue };
            for sub in &c.subscriptions {
                if !rng.chance(fraction) {
                    continue;
                }
                let Some(sub_id) = sub.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let (field, value) = random_edit(&mut rng, sub);
                if let Ok(mut done) = self.apply(Change::SetSubscriptionField {
                    customer_id: id,
                    subscription_id: sub_id.to_string(),
                    field: field.to_string(),
                    value,
                }) {
                    out.append(&mut done);
                }
            }
        }
        out
    }
}

fn random_edit(rng: &mut Rng, sub: &Map<String, Value>) -> (&'static str, Value) {
    let text = |f: &str| {
        sub.get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match rng.below(5) {
        0 => {
            let next = if text("status") == "active" {
                "suspended"
            } else {
                "active"
            };
            ("status", json!(next))
        }
        1 => {
            let q = sub.get("quantity").and_then(Value::as_i64).unwrap_or(1);
            let delta = 1 + rng.below(20) as i64;
            let next = if q > delta && rng.chance(0.5) {
                q - delta
            } else {
                q + delta
            };
            ("quantity", json!(next))
        }
        2 => {
            let on = sub
                .get("autoRenewEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            ("autoRenewEnabled", json!(!on))
        }
        3 => {
            // A renewal: the commitment moves on by a year.
            let end = text("commitmentEndDate");
            let next = chrono::DateTime::parse_from_rfc3339(&end)
                .map(|d| (d + chrono::Duration::days(365)).to_utc())
                .unwrap_or_else(|_| chrono::Utc::now());
            (
                "commitmentEndDate",
                json!(next.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            )
        }
        _ => {
            let next = if text("termDuration") == "P1Y" {
                "P1M"
            } else {
                "P1Y"
            };
            ("termDuration", json!(next))
        }
    }
}

struct Token {
    expires: Instant,
    app_only: bool,
    audience: String,
}

struct RefreshToken {
    expires: Instant,
    revoked: bool,
}

struct Auth {
    access: HashMap<String, Token>,
    refresh: HashMap<String, RefreshToken>,
    issued: u64,
}

/// Shared by every request of one simulator.
pub(crate) struct State {
    config: SimConfig,
    world: Mutex<World>,
    auth: Mutex<Auth>,
    knobs: Mutex<Knobs>,
    limiter: Mutex<Option<Gcra>>,
    stats: Mutex<Stats>,
    /// The activity log: records of partner-made changes, oldest first.
    audit: Mutex<Vec<Value>>,
    /// MS-RequestIds seen lately: the current generation and the one before, so memory stays
    /// bounded however long the simulator runs (a retry follows its request within seconds).
    request_ids: Mutex<[HashSet<String>; 2]>,
    in_flight: AtomicUsize,
    request_counter: AtomicU64,
    epoch: Instant,
}

/// A mutex poisoned by a panicking request must not take the whole simulator down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn limiter_for(knobs: &Knobs) -> Option<Gcra> {
    knobs.requests_per_minute.map(|rpm| {
        let burst = knobs.burst.unwrap_or((rpm / 60).max(1));
        Gcra::new(rpm, Duration::from_secs(60), burst)
    })
}

impl State {
    fn new(config: SimConfig) -> State {
        let now = Instant::now();
        let mut refresh = HashMap::new();
        refresh.insert(
            config.tenant.refresh_token.clone(),
            RefreshToken {
                expires: now + config.refresh_token_lifetime,
                revoked: false,
            },
        );
        State {
            world: Mutex::new(World::new(&config)),
            auth: Mutex::new(Auth {
                access: HashMap::new(),
                refresh,
                issued: 0,
            }),
            limiter: Mutex::new(limiter_for(&config.knobs)),
            knobs: Mutex::new(config.knobs.clone()),
            stats: Mutex::new(Stats::default()),
            audit: Mutex::new(Vec::new()),
            request_ids: Mutex::new([HashSet::new(), HashSet::new()]),
            in_flight: AtomicUsize::new(0),
            request_counter: AtomicU64::new(0),
            epoch: now,
            config,
        }
    }
}

/// A running simulator: one partner tenant's view of the server. Dropping the last view of a
/// server stops it.
pub struct Simulator {
    state: Arc<State>,
    addr: SocketAddr,
    /// Held, not read: the server runs while a view of it does.
    _server: Arc<ServerTask>,
}

/// Stops the server when the last [`Simulator`] of it goes.
struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        // Not graceful on purpose: a `hang` fault may hold a response for minutes.
        self.0.abort();
    }
}

impl Simulator {
    /// Serves on 127.0.0.1 at a free port.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        Simulator::start_on(config, 0).await
    }

    /// Serves on 127.0.0.1:`port` (0 = any free port).
    pub async fn start_on(config: SimConfig, port: u16) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(config));
        let app = server::router(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        Ok(Simulator {
            state,
            addr,
            _server: Arc::new(ServerTask(task)),
        })
    }

    /// One server, as Partner Center is, for several partner tenants: each config is a tenant
    /// with its own customers, tokens, activity log and budget (give each its own
    /// [`SimTenant`]; two seeds share the seed customer). The token endpoints answer by the
    /// tenant in their path, the API by the tenant whose access token a request carries.
    pub async fn start_tenants(
        configs: Vec<SimConfig>,
        port: u16,
    ) -> std::io::Result<Vec<Simulator>> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let states: Vec<Arc<State>> = configs
            .into_iter()
            .map(|c| Arc::new(State::new(c)))
            .collect();
        let app = server::tenants_router(states.clone());
        let task = Arc::new(ServerTask(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        })));
        Ok(states
            .into_iter()
            .map(|state| Simulator {
                state,
                addr,
                _server: task.clone(),
            })
            .collect())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `partner_center.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What `auth.authority` should be (the token endpoints live here too).
    pub fn authority(&self) -> String {
        self.base_url()
    }

    /// Settings for pcsync as `PCSYNC__...` environment variables (secrets included: these are
    /// the simulator's own, worthless outside it).
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("PCSYNC__PARTNER_CENTER__BASE_URL".into(), self.base_url()),
            ("PCSYNC__AUTH__AUTHORITY".into(), self.authority()),
        ];
        vars.extend(self.credential_vars("PCSYNC__"));
        vars
    }

    /// This tenant's credentials as the variables of a `[[tenants]]` entry named `name`
    /// (`PCSYNC_TENANT_<NAME>__AUTH__…`).
    pub fn tenant_env_vars(&self, name: &str) -> Vec<(String, String)> {
        self.credential_vars(&crate::config::tenant_env_prefix(name))
    }

    fn credential_vars(&self, prefix: &str) -> Vec<(String, String)> {
        let t = &self.state.config.tenant;
        vec![
            (format!("{prefix}AUTH__TENANT_ID"), t.tenant_id.clone()),
            (format!("{prefix}AUTH__CLIENT_ID"), t.client_id.clone()),
            (
                format!("{prefix}AUTH__CLIENT_SECRET"),
                t.client_secret.clone(),
            ),
            (
                format!("{prefix}AUTH__REFRESH_TOKEN"),
                t.refresh_token.clone(),
            ),
        ]
    }

    /// The simulator's clock (see [`SimConfig::clock`]).
    pub fn clock(&self) -> crate::clock::Clock {
        self.state.config.clock.clone()
    }

    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// A change made by the partner's admin: the activity log records it.
    pub fn apply(&self, change: Change) -> Result<Vec<Mutation>, SimError> {
        self.apply_as(change, &Actor::partner_admin())
    }

    /// A change made by `actor`: a partner user gets activity records, the system none.
    pub fn apply_as(&self, change: Change, actor: &Actor) -> Result<Vec<Mutation>, SimError> {
        let done = lock(&self.state.world).apply(change)?;
        self.state.log(&done, actor);
        Ok(done)
    }

    /// The activity log's records so far.
    pub fn audit_records(&self) -> Vec<Value> {
        lock(&self.state.audit).clone()
    }

    /// Changes a `fraction` of all subscriptions (one field each), deterministically for `seed`.
    /// Changes a share of all subscriptions, made by the partner's admin (activity records).
    pub fn mutate(&self, fraction: f64, seed: u64) -> Vec<Mutation> {
        self.mutate_as(fraction, seed, &Actor::partner_admin())
    }

    pub fn mutate_as(&self, fraction: f64, seed: u64, actor: &Actor) -> Vec<Mutation> {
        let done = lock(&self.state.world).mutate(fraction, seed);
        self.state.log(&done, actor);
        done
    }

    pub fn stats(&self) -> Stats {
        lock(&self.state.stats).clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.state.stats) = Stats::default();
        *lock(&self.state.request_ids) = [HashSet::new(), HashSet::new()];
    }

    pub fn knobs(&self) -> Knobs {
        lock(&self.state.knobs).clone()
    }

    pub fn set_knobs(&self, knobs: Knobs) {
        server::set_knobs(&self.state, knobs);
    }

    /// Customer ids in list order.
    pub fn customer_ids(&self) -> Vec<Uuid> {
        lock(&self.state.world).order.clone()
    }

    /// A customer as the simulator now holds it (what a correct sync must store).
    pub fn customer(&self, id: Uuid) -> Option<CustomerData> {
        lock(&self.state.world).get(&id)
    }

    /// The customer list as pcsync's CSV (`customer_id,mpn_id,name`).
    pub fn customers_csv(&self) -> String {
        let world = lock(&self.state.world);
        let mut out = String::from("customer_id,mpn_id,name\n");
        for id in &world.order {
            if let Some(c) = world.get(id) {
                let name = c.company_name.replace('"', "\"\"");
                out.push_str(&format!("{id},{SEED_MPN_ID},\"{name}\"\n"));
            }
        }
        out
    }

    /// Whether `token` is a refresh token the simulator would accept now.
    pub fn refresh_token_valid(&self, token: &str) -> bool {
        lock(&self.state.auth)
            .refresh
            .get(token)
            .is_some_and(|t| !t.revoked && t.expires > Instant::now())
    }

    /// Makes every access token expire now (the next API call gets a 401).
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for t in lock(&self.state.auth).access.values_mut() {
            t.expires = now;
        }
    }

    /// Makes every refresh token expire now (the next exchange gets AADSTS700082).
    pub fn expire_refresh_tokens(&self) {
        let now = Instant::now();
        for t in lock(&self.state.auth).refresh.values_mut() {
            t.expires = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::new(&SimConfig {
            customers: 50,
            ..SimConfig::default()
        })
    }

    #[test]
    fn mutations_are_deterministic_for_a_seed() {
        let a = world().mutate(0.05, 9);
        let b = world().mutate(0.05, 9);
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_ne!(a, world().mutate(0.05, 10));
    }

    #[test]
    fn mutate_changes_about_the_fraction_asked() {
        let mut w = world();
        let subs: usize = w
            .order
            .clone()
            .iter()
            .filter_map(|id| w.get(id))
            .map(|c| c.subscriptions.len())
            .sum();
        let changed = w.mutate(0.1, 3).len();
        let share = changed as f64 / subs as f64;
        assert!((0.05..0.15).contains(&share), "{changed} of {subs}");
    }

    #[test]
    fn targeted_changes_show_in_the_data() {
        let mut w = world();
        let id = w.order[3];
        let sub_id = w.get(&id).expect("customer").subscriptions[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let done = w
            .apply(Change::SetSubscriptionField {
                customer_id: id,
                subscription_id: sub_id.clone(),
                field: "quantity".into(),
                value: json!(999),
            })
            .expect("applies");
        assert_eq!(done[0].new, Some(json!(999)));
        assert_eq!(
            w.get(&id).expect("customer").subscriptions[0]["quantity"],
            999
        );
        w.apply(Change::RemoveSubscription {
            customer_id: id,
            subscription_id: sub_id.clone(),
        })
        .expect("removes");
        assert!(
            !w.get(&id)
                .expect("customer")
                .subscriptions
                .iter()
                .any(|s| s["id"] == sub_id.as_str())
        );
        assert_eq!(
            w.apply(Change::RemoveSubscription {
                customer_id: id,
                subscription_id: sub_id.clone(),
            }),
            Err(SimError::UnknownSubscription(id, sub_id))
        );
    }

    #[test]
    fn fault_rules_parse_from_the_command_line_form() {
        let r = FaultRule::parse("503:0.25").expect("parses");
        assert_eq!(r.kind, FaultKind::Status503);
        assert_eq!(r.probability, Some(0.25));
        let r = FaultRule::parse(&format!("hang@{SEED_CUSTOMER_ID}")).expect("parses");
        assert_eq!(r.kind, FaultKind::Hang);
        assert!(r.customer_id.is_some());
        assert!(
            FaultRule::parse("teapot")
                .unwrap_err()
                .contains("unknown fault")
        );
        assert!(
            FaultRule::parse("500:2")
                .unwrap_err()
                .contains("probability")
        );
    }
}
