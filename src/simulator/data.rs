//! The simulated Partner Center's data: deterministic from a seed, generated on demand (so
//! 100,000 customers cost a map of ids, not a gigabyte), with the seed pages' exact objects for
//! one customer. Objects are JSON maps in the wire format, so that a mutation can set any field.

use chrono::NaiveDate;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The customer of the seed pages, with exactly their subscriptions and managed services.
pub const SEED_CUSTOMER_ID: &str = "c501c3c4-d776-40ef-9ecf-9cefb59442c1";
/// The seed page's partner id; every generated customer's own partner.
pub const SEED_MPN_ID: &str = "4847383";
/// Other partners' ids that appear on generated subscriptions (filtered out by `?mpn_id=`).
pub const OTHER_MPN_IDS: [&str; 2] = ["1234567", "5550123"];

/// SplitMix64: a tiny, well-distributed generator whose output never changes between versions
/// (a dependency's generator may), so a seed means the same data forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for one purpose and index under a seed.
    pub fn derive(seed: u64, purpose: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.0 ^= r.next_u64() ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Modulo bias is irrelevant at these sizes.
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn uuid(&mut self) -> Uuid {
        let hi = self.next_u64();
        let lo = self.next_u64();
        uuid::Builder::from_random_bytes(((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes())
            .into_uuid()
    }
}

const PURPOSE_CUSTOMER: u64 = 1;
const PURPOSE_SUBSCRIPTION: u64 = 2;
const PURPOSE_ADDED: u64 = 3;
const PURPOSE_PROFILE: u64 = 4;
const PURPOSE_SERVICES: u64 = 5;

/// One simulated customer and everything it owns.
#[derive(Debug, Clone)]
pub struct CustomerData {
    pub id: Uuid,
    pub company_name: String,
    pub domain: String,
    pub relationship: String,
    pub subscriptions: Vec<Map<String, Value>>,
    pub managed_services: Vec<Map<String, Value>>,
}

impl CustomerData {
    /// The Customer object of the customer list.
    pub fn customer_json(&self) -> Value {
        let id = self.id.to_string();
        json!({
            "id": id,
            "commerceId": Uuid::from_u128(self.id.as_u128().rotate_left(17)).to_string(),
            "companyProfile": {
                "tenantId": id,
                "domain": self.domain,
                "companyName": self.company_name,
                "links": {"self": link(&format!("/customers/{id}/profiles/company"))},
                "attributes": {"objectType": "CustomerCompanyProfile"}
            },
            "relationshipToPartner": self.relationship,
            "allowDelegatedAccess": self.relationship == "reseller",
            "customDomains": [],
            "links": {"self": link(&format!("/customers/{id}"))},
            "attributes": {"objectType": "Customer"}
        })
    }
}

fn link(uri: &str) -> Value {
    json!({"uri": uri, "method": "GET", "headers": []})
}

struct Offer {
    id: &'static str,
    name: &'static str,
    /// New commerce (NCE) offers have a product id, terms and a publisher; legacy ones do not.
    nce: bool,
    unit_type: &'static str,
}

const OFFERS: &[Offer] = &[
    Offer {
        id: "DB2E705F-B82A-4024-A3D5-D88E12F2DB35",
        name: "Intune Device",
        nce: false,
        unit_type: "Licenses",
    },
    Offer {
        id: "91FD106F-4B2C-4938-95AC-F54F74E9A239",
        name: "Office 365 E1",
        nce: false,
        unit_type: "Licenses",
    },
    Offer {
        id: "796B6B5F-613C-4E24-A17C-EBA730D49C02",
        name: "Office 365 E3",
        nce: false,
        unit_type: "Licenses",
    },
    Offer {
        id: "bd938f12-058f-4927-bba3-ae36b1d2501c",
        name: "Exchange Online (Plan 1)",
        nce: false,
        unit_type: "Licenses",
    },
    Offer {
        id: "CFQ7TTC0LH18:0001:CFQ7TTC0P0WS",
        name: "Microsoft 365 Business Basic",
        nce: true,
        unit_type: "Licenses",
    },
    Offer {
        id: "CFQ7TTC0LDPB:0001:CFQ7TTC0N8SS",
        name: "Microsoft 365 Business Standard",
        nce: true,
        unit_type: "Licenses",
    },
    Offer {
        id: "CFQ7TTC0LCHC:0002:CFQ7TTC0P8XX",
        name: "Microsoft 365 Business Premium",
        nce: true,
        unit_type: "Licenses",
    },
    Offer {
        id: "CFQ7TTC0LFLX:0001:CFQ7TTC0PQ2D",
        name: "Microsoft 365 E3",
        nce: true,
        unit_type: "Licenses",
    },
    Offer {
        id: "CFQ7TTC0MM8R:0002:CFQ7TTC0S4M3",
        name: "Microsoft Teams Essentials",
        nce: true,
        unit_type: "Licenses",
    },
    Offer {
        id: "cfq7ttc0lh0r:0001:cfq7ttc0n9k1",
        name: "Power BI Pro",
        nce: true,
        unit_type: "Licenses",
    },
    Offer {
        id: "DZH318Z0BQ3V:0001:DZH318Z0BQ3W",
        name: "Azure plan",
        nce: true,
        unit_type: "Usage-based",
    },
];

const STATUSES: &[(&str, u32)] = &[
    ("active", 70),
    ("suspended", 8),
    ("deleted", 6),
    ("expired", 5),
    ("pending", 4),
    ("disabled", 4),
    ("none", 3),
];
const CYCLES: &[&str] = &[
    "monthly",
    "annual",
    "none",
    "one_time",
    "triennial",
    "biennial",
];
const TERMS: &[&str] = &["P1M", "P1Y", "P3Y"];

const SERVICES: &[(&str, &str, &str)] = &[
    ("Exchange", "Exchange", "Office"),
    (
        "MicrosoftCommunicationsOnline",
        "SkypeforBusiness",
        "Office",
    ),
    ("SharePoint", "SharePoint", "Office"),
    ("Teams", "MicrosoftTeams", "Office"),
    ("Intune", "Intune", "EnterpriseMobilitySuite"),
    (
        "AzureActiveDirectory",
        "AzureActiveDirectory",
        "EnterpriseMobilitySuite",
    ),
    ("PowerBI", "PowerBI", "PowerPlatform"),
    ("Dynamics365", "Dynamics365", "Dynamics"),
    ("Yammer", "Yammer", "Office"),
];

const NAMES: &[&str] = &[
    "Contoso",
    "Fabrikam",
    "Northwind Traders",
    "Adatum",
    "Tailspin Toys",
    "Woodgrove Bank",
    "Litware",
    "Proseware",
    "Wingtip Toys",
    "Alpine Ski House",
    "Coho Winery",
    "Lucerne Publishing",
];
const SUFFIXES: &[&str] = &["Ltd", "GmbH", "Inc.", "B.V.", "S.A.", "Pty Ltd", "AB"];

fn pick_status(rng: &mut Rng) -> &'static str {
    let total: u32 = STATUSES.iter().map(|(_, w)| w).sum();
    let mut n = rng.below(u64::from(total)) as u32;
    for (s, w) in STATUSES {
        if n < *w {
            return s;
        }
        n -= w;
    }
    "active"
}

/// A timestamp in Partner Center's style, `base_days` plus up to `spread_days` days from the
/// simulator's first day: up to 7 fractional digits, sometimes fewer.
fn timestamp(rng: &mut Rng, base: NaiveDate, base_days: i64, spread_days: u64) -> String {
    let days = base_days + rng.below(spread_days.max(1)) as i64;
    timestamp_on(rng, base, days)
}

/// A timestamp on the day `days` after `base`, at a random time of day.
fn timestamp_on(rng: &mut Rng, base: NaiveDate, days: i64) -> String {
    let style = TimeStyle::draw(rng);
    style.on(base + chrono::Duration::days(days))
}

/// A time of day and a way of writing it, drawn once, for a date decided later.
#[derive(Debug, Clone, Copy)]
struct TimeStyle {
    seconds: i64,
    frac: u64,
    form: u64,
}

impl TimeStyle {
    fn draw(rng: &mut Rng) -> TimeStyle {
        let seconds = rng.below(86_400) as i64;
        let frac = rng.below(10_000_000);
        TimeStyle {
            seconds,
            frac,
            form: rng.below(3),
        }
    }

    fn on(self, day: NaiveDate) -> String {
        let t = day.and_time(chrono::NaiveTime::MIN).and_utc()
            + chrono::Duration::seconds(self.seconds);
        match self.form {
            0 => format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), self.frac),
            1 => format!("{}.{:02}Z", t.format("%Y-%m-%dT%H:%M:%S"), self.frac % 100),
            _ => format!("{}Z", t.format("%Y-%m-%dT00:00:00")),
        }
    }
}

fn hex_id(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.below(16) as usize]))
        .collect()
}

/// One generated subscription for a customer, in the legacy or the new-commerce shape.
/// How long after a term begins its seats can be returned with a refund.
pub const REFUND_DAYS: i64 = 7;

/// `refundableQuantity`: `quantity` seats refundable until `until` (none when 0).
pub fn refund_window(quantity: u64, until: &str) -> Value {
    if quantity == 0 {
        json!({"totalQuantity": 0, "details": []})
    } else {
        json!({"totalQuantity": quantity, "details": [{"quantity": quantity, "allowedUntilDateTime": until}]})
    }
}

/// Partner Center's way of writing a day: midnight UTC.
pub fn day_text(day: NaiveDate) -> String {
    format!("{}T00:00:00Z", day.format("%Y-%m-%d"))
}

/// The length of a term (`P1M`, `P1Y`, `P3Y`; a year when unknown).
pub fn term_months(term: &str) -> u32 {
    match term {
        "P1M" => 1,
        "P3Y" => 36,
        "P2Y" => 24,
        _ => 12,
    }
}

/// How far a billing cycle reaches (`None`: to the term's end).
pub fn cycle_months(cycle: &str) -> Option<u32> {
    match cycle {
        "monthly" => Some(1),
        "annual" => Some(12),
        _ => None,
    }
}

/// The first end of a billing cycle on or after `from`: a whole number of cycles before the
/// term's `end`, on the same day of the month.
pub fn billing_cycle_end(end: NaiveDate, cycle: &str, from: NaiveDate) -> NaiveDate {
    let Some(months) = cycle_months(cycle) else {
        return end;
    };
    let mut b = end;
    while let Some(prev) = b.checked_sub_months(chrono::Months::new(months)) {
        if prev < from {
            break;
        }
        b = prev;
    }
    b
}

/// One generated subscription for a customer, in the legacy or the new-commerce shape, with
/// its dates counted from `base` (the simulator's first day): terms end within their length
/// (a monthly term within a month), billing cycles end on the term's day of the month.
pub fn subscription(rng: &mut Rng, customer: Uuid, base: NaiveDate) -> Map<String, Value> {
    let offer = rng.pick(OFFERS);
    let id = rng.uuid().to_string();
    let status = pick_status(rng);
    let is_trial = rng.chance(0.05);
    let partner_id = if rng.chance(0.85) {
        SEED_MPN_ID
    } else {
        rng.pick(&OTHER_MPN_IDS)
    };
    let created = timestamp(rng, base, -400, 400);
    let start = timestamp(rng, base, -200, 200);
    // The term's end: within a year for legacy offers, within the term for new commerce.
    let end_days = rng.below(1095) as i64;
    let end_style = TimeStyle::draw(rng);
    let mut end_day = base + chrono::Duration::days(end_days % 365);
    let order_id = if rng.chance(0.3) {
        hex_id(rng, 12)
    } else {
        rng.uuid().to_string().to_uppercase()
    };
    let mut s = Map::new();
    s.insert("id".into(), json!(id));
    s.insert("offerId".into(), json!(offer.id));
    s.insert("offerName".into(), json!(offer.name));
    let friendly = if rng.chance(0.5) {
        offer.name.to_string()
    } else {
        format!("{} - {}", offer.name, rng.below(100))
    };
    s.insert("friendlyName".into(), json!(friendly));
    s.insert("quantity".into(), json!(1 + rng.below(300)));
    s.insert("unitType".into(), json!(offer.unit_type));
    s.insert("creationDate".into(), json!(created));
    s.insert("effectiveStartDate".into(), json!(start));
    s.insert("status".into(), json!(status));
    s.insert("autoRenewEnabled".into(), json!(rng.chance(0.8)));
    s.insert("isTrial".into(), json!(is_trial));
    s.insert(
        "billingType".into(),
        json!(if offer.unit_type == "Usage-based" {
            "usage"
        } else {
            "license"
        }),
    );
    let cycle = *rng.pick(CYCLES);
    s.insert("billingCycle".into(), json!(cycle));
    s.insert("partnerId".into(), json!(partner_id));
    s.insert("contractType".into(), json!("subscription"));
    s.insert("orderId".into(), json!(order_id));
    let self_link = link(&format!("/customers/{customer}/subscriptions/{id}"));
    if offer.nce {
        let product = offer.id.split(':').next().unwrap_or(offer.id);
        let term = *rng.pick(TERMS);
        let within = i64::from(term_months(term)) * 365 / 12;
        end_day = base + chrono::Duration::days(end_days % within.max(1));
        let renewal = match rng.below(3) {
            0 => String::new(),
            1 => term.to_string(),
            _ => rng.pick(TERMS).to_string(),
        };
        s.insert(
            "productType".into(),
            json!({"id": "OnlineServicesNCE", "displayName": "OnlineServicesNCE"}),
        );
        s.insert("hasPurchasableAddons".into(), json!(rng.chance(0.2)));
        s.insert("termDuration".into(), json!(term));
        s.insert("renewalTermDuration".into(), json!(renewal));
        s.insert(
            "cancellationAllowedUntilDate".into(),
            json!(timestamp(rng, base, -30, 60)),
        );
        s.insert("isMicrosoftProduct".into(), json!(true));
        s.insert("attentionNeeded".into(), json!(false));
        s.insert("actionTaken".into(), json!(false));
        s.insert("publisherName".into(), json!("Microsoft Corporation"));
        // The term's end as an instant (7 fractional digits at times), the billing period's
        // end, refundable licenses and, for some, what they renew into.
        let end_instant = format!(
            "{}T23:59:59.{:07}Z",
            end_day.format("%Y-%m-%d"),
            rng.below(10_000_000)
        );
        s.insert("commitmentEndDateTime".into(), json!(end_instant));
        s.insert(
            "billingCycleEndDate".into(),
            json!(day_text(billing_cycle_end(end_day, cycle, base))),
        );
        // Seats can be returned for 7 days after the term began (a purchase or renewal):
        // only terms that began within the last week have a refund window open.
        let refundable = 1 + rng.below(3);
        let window = TimeStyle::draw(rng);
        let term_start = end_day
            .checked_sub_months(chrono::Months::new(term_months(term)))
            .and_then(|d| d.succ_opt())
            .unwrap_or(base);
        let closes = term_start + chrono::Duration::days(REFUND_DAYS);
        s.insert(
            "refundableQuantity".into(),
            if closes > base {
                refund_window(refundable, &window.on(closes))
            } else {
                refund_window(0, "")
            },
        );
        if rng.chance(0.3) {
            let mut parts = offer.id.split(':');
            let (product, sku, availability) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            s.insert(
                "scheduledNextTermInstructions".into(),
                json!({
                    "product": {"productId": product, "skuId": sku, "availabilityId": availability,
                        "billingCycle": rng.pick(CYCLES), "termDuration": rng.pick(TERMS)},
                    "quantity": 1 + rng.below(300),
                }),
            );
        }
        s.insert(
            "links".into(),
            json!({
                "product": link(&format!("/products/{product}?country=US")),
                "self": self_link,
            }),
        );
        s.insert("attributes".into(), json!({"objectType": "Subscription"}));
    } else {
        s.insert(
            "links".into(),
            json!({
                "offer": link(&format!("/offers/{}?country=US", offer.id)),
                "self": self_link,
            }),
        );
        s.insert(
            "attributes".into(),
            json!({"etag": hex_id(rng, 40), "objectType": "Subscription"}),
        );
    }
    s.insert("commitmentEndDate".into(), json!(end_style.on(end_day)));
    s
}

/// Part numbers of SKUs a tenant has whatever its partner sold: free and trial SKUs, which no
/// subscription of the customer's matches.
const UNMATCHED_SKUS: &[(&str, &str)] = &[
    ("FLOW_FREE", "Microsoft Power Automate Free"),
    ("POWER_BI_STANDARD", "Power BI (free)"),
];

/// A stable GUID for a SKU part number (Entra SKU ids are GUIDs).
fn sku_guid(part_number: &str) -> Uuid {
    let mut rng = Rng::derive(0x5C0, part_number.len() as u64, {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in part_number.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    });
    rng.uuid()
}

/// The customer's subscribed SKUs (licences and their use) in Partner Center's wire format:
/// one SKU per offer its active and suspended subscriptions hold (whoever sold them), a
/// new-commerce offer's part number as `PRODUCT/SKU`, a legacy offer's under its name, and two
/// free SKUs no subscription matches. Consumed units are a stable share of the active ones, so
/// they change only when the subscriptions do.
pub fn subscribed_skus(data: &CustomerData) -> Vec<Value> {
    let mut by_offer: std::collections::BTreeMap<String, (String, i64, i64)> =
        std::collections::BTreeMap::new();
    for s in &data.subscriptions {
        let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default();
        let status = text("status");
        if !matches!(status, "active" | "suspended") {
            continue;
        }
        let offer = text("offerId");
        let mut parts = offer.split(':');
        let part_number = match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(k), Some(_)) => format!("{p}/{k}"),
            _ => text("offerName")
                .to_ascii_uppercase()
                .replace([' ', '(', ')'], "_"),
        };
        let quantity = s.get("quantity").and_then(Value::as_i64).unwrap_or(0);
        let entry = by_offer
            .entry(part_number)
            .or_insert_with(|| (text("offerName").to_string(), 0, 0));
        if status == "active" {
            entry.1 += quantity;
        } else {
            entry.2 += quantity;
        }
    }
    let mut items: Vec<Value> = by_offer
        .into_iter()
        .map(|(part_number, (name, active, suspended))| {
            let guid = sku_guid(&part_number);
            // 60 to 100 % of the active seats are assigned, stably per customer and SKU.
            let share = 60 + (guid.as_u128() ^ data.id.as_u128()) % 41;
            let consumed = active * share as i64 / 100;
            sku_json(&guid, &name, &part_number, active, consumed, suspended)
        })
        .collect();
    for (part_number, name) in UNMATCHED_SKUS {
        items.push(sku_json(
            &sku_guid(part_number),
            name,
            part_number,
            10_000,
            3,
            0,
        ));
    }
    items
}

fn sku_json(
    id: &Uuid,
    name: &str,
    part_number: &str,
    active: i64,
    consumed: i64,
    suspended: i64,
) -> Value {
    json!({
        "availableUnits": (active - consumed).max(0),
        "activeUnits": active,
        "consumedUnits": consumed,
        "suspendedUnits": suspended,
        "totalUnits": active + suspended,
        "warningUnits": 0,
        "productSku": {
            "id": id.to_string(),
            "name": name,
            "skuPartNumber": part_number,
            "targetType": "User",
            "licenseGroupId": "group1"
        },
        "servicePlans": [],
        "capabilityStatus": "Enabled",
        "attributes": {"objectType": "SubscribedSku"}
    })
}

/// A managed service object, with portal links for the customer.
pub fn managed_service(
    id: &str,
    name: &str,
    group: &str,
    ctid: &str,
    domain: &str,
) -> Map<String, Value> {
    let portal = "https://portal.office.com/Partner/BeginClientSession.aspx";
    let v = json!({
        "id": id,
        "name": name,
        "groupName": group,
        "links": {
            "adminService": link(&format!("{portal}?CTID={ctid}&CSDEST={id}&InitialDomain={domain}&PrimaryDomain={domain}")),
            "serviceHealth": link(&format!("{portal}?CTID={ctid}&CSDEST=ServiceStatus")),
            "serviceTicket": link(&format!("{portal}?CTID={ctid}&CSDEST=Support")),
        },
        "attributes": {"objectType": "ManagedService"}
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A service from the catalogue that the customer does not have yet, if any.
pub fn new_managed_service(data: &CustomerData) -> Option<Map<String, Value>> {
    let id = data.id.to_string();
    SERVICES
        .iter()
        .find(|(sid, _, _)| {
            !data
                .managed_services
                .iter()
                .any(|m| m.get("id").and_then(Value::as_str) == Some(sid))
        })
        .map(|(sid, name, group)| managed_service(sid, name, group, &id, &data.domain))
}

/// Generation parameters.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub seed: u64,
    /// The simulator's first day: generated dates count from it.
    pub base_day: NaiveDate,
    pub subscriptions_per_customer: u32,
    pub managed_services_per_customer: u32,
}

/// The id of generated customer `index` (index 0 is the seed customer).
pub fn customer_id(shape: &Shape, index: u32) -> Uuid {
    if index == 0 {
        return Uuid::parse_str(SEED_CUSTOMER_ID).unwrap_or_default();
    }
    Rng::derive(shape.seed, PURPOSE_CUSTOMER, u64::from(index)).uuid()
}

/// The id of the `k`-th customer added by a mutation.
pub fn added_customer_id(shape: &Shape, k: u32) -> Uuid {
    Rng::derive(shape.seed, PURPOSE_ADDED, u64::from(k)).uuid()
}

/// Which parts of a customer to generate: an API call needs one, so the others are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub subscriptions: bool,
    pub managed_services: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        subscriptions: true,
        managed_services: true,
    };
    pub const PROFILE: Parts = Parts {
        subscriptions: false,
        managed_services: false,
    };
    pub const SUBSCRIPTIONS: Parts = Parts {
        subscriptions: true,
        managed_services: false,
    };
    pub const MANAGED_SERVICES: Parts = Parts {
        subscriptions: false,
        managed_services: true,
    };
}

/// Everything generated customer `index` owns, before any mutation.
pub fn generate_customer(shape: &Shape, index: u32) -> CustomerData {
    generate_customer_parts(shape, index, Parts::ALL)
}

/// The profile and the asked-for parts of generated customer `index`; each part comes from a
/// generator of its own, so it is the same whichever parts are asked for.
pub fn generate_customer_parts(shape: &Shape, index: u32, parts: Parts) -> CustomerData {
    if index == 0 {
        let mut seed = seed_customer();
        if !parts.subscriptions {
            seed.subscriptions.clear();
        }
        if !parts.managed_services {
            seed.managed_services.clear();
        }
        return seed;
    }
    let id = customer_id(shape, index);
    let mut rng = Rng::derive(shape.seed, PURPOSE_PROFILE, u64::from(index));
    let base = rng.pick(NAMES);
    let company_name = format!("{base} {index} {}", rng.pick(SUFFIXES));
    let domain = format!(
        "{}{index}.onmicrosoft.com",
        base.to_ascii_lowercase().replace(' ', "")
    );
    let relationship = if rng.chance(0.9) {
        "reseller"
    } else {
        "advisor"
    }
    .to_string();
    let mut subscriptions = Vec::new();
    if parts.subscriptions {
        let mut rng = Rng::derive(shape.seed, PURPOSE_SUBSCRIPTION, u64::from(index));
        let avg = u64::from(shape.subscriptions_per_customer);
        // About `avg`: uniform in avg/2 ..= avg*3/2.
        let n_subs = if avg == 0 {
            0
        } else {
            avg / 2 + rng.below(avg + 1)
        };
        subscriptions = (0..n_subs)
            .map(|_| subscription(&mut rng, id, shape.base_day))
            .collect();
    }
    let mut managed_services = Vec::new();
    if parts.managed_services {
        let mut rng = Rng::derive(shape.seed, PURPOSE_SERVICES, u64::from(index));
        let ms_avg = u64::from(shape.managed_services_per_customer).min(SERVICES.len() as u64);
        let n_services = if ms_avg == 0 {
            0
        } else {
            (ms_avg - ms_avg / 3 + rng.below(2 * (ms_avg / 3) + 1)).min(SERVICES.len() as u64)
        };
        // A rotation of the catalogue, so customers differ but never repeat a service.
        let start = rng.below(SERVICES.len() as u64) as usize;
        let ctid = id.to_string();
        managed_services = (0..n_services as usize)
            .map(|k| {
                let (sid, name, group) = SERVICES[(start + k) % SERVICES.len()];
                managed_service(sid, name, group, &ctid, &domain)
            })
            .collect();
    }
    CustomerData {
        id,
        company_name,
        domain,
        relationship,
        subscriptions,
        managed_services,
    }
}

/// A customer added by a mutation: a few subscriptions, a couple of services.
pub fn generate_added_customer(shape: &Shape, k: u32) -> CustomerData {
    let id = added_customer_id(shape, k);
    let mut rng = Rng::derive(shape.seed, PURPOSE_ADDED, u64::from(k) + (1 << 40));
    let domain = format!("newcustomer{k}.onmicrosoft.com");
    let subscriptions = (0..3)
        .map(|_| subscription(&mut rng, id, shape.base_day))
        .collect();
    let ctid = id.to_string();
    let managed_services = SERVICES[..2]
        .iter()
        .map(|(sid, name, group)| managed_service(sid, name, group, &ctid, &domain))
        .collect();
    CustomerData {
        id,
        company_name: format!("New Customer {k} Ltd"),
        domain,
        relationship: "reseller".into(),
        subscriptions,
        managed_services,
    }
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The customer of the seed pages: its objects are the pages' response examples, verbatim.
pub fn seed_customer() -> CustomerData {
    static SEED: std::sync::OnceLock<CustomerData> = std::sync::OnceLock::new();
    SEED.get_or_init(parse_seed_customer).clone()
}

fn parse_seed_customer() -> CustomerData {
    CustomerData {
        id: Uuid::parse_str(SEED_CUSTOMER_ID).unwrap_or_default(),
        company_name: "Contoso Seed Customer".into(),
        domain: "contososeed.onmicrosoft.com".into(),
        relationship: "reseller".into(),
        subscriptions: vec![
            object(include_str!("seed/subscription_legacy.json")),
            object(include_str!("seed/subscription_nce.json")),
        ],
        managed_services: vec![
            object(include_str!("seed/managed_service_exchange.json")),
            object(include_str!("seed/managed_service_skype.json")),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            seed: 42,
            base_day: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default(),
            subscriptions_per_customer: 10,
            managed_services_per_customer: 5,
        }
    }

    #[test]
    fn generation_is_deterministic_for_a_seed_and_differs_across_seeds() {
        let a = generate_customer(&shape(), 7);
        let b = generate_customer(&shape(), 7);
        assert_eq!(a.id, b.id);
        assert_eq!(a.subscriptions, b.subscriptions);
        let other = Shape {
            seed: 43,
            ..shape()
        };
        assert_ne!(generate_customer(&other, 7).id, a.id);
    }

    #[test]
    fn seed_objects_parse() {
        let s = seed_customer();
        assert_eq!(s.subscriptions.len(), 2);
        assert_eq!(s.managed_services.len(), 2);
        assert!(s.subscriptions.iter().all(|m| m.contains_key("offerId")));
        assert!(
            s.managed_services
                .iter()
                .all(|m| m.contains_key("groupName"))
        );
    }

    #[test]
    fn generated_customers_cover_the_wire_format_traps() {
        let shape = shape();
        let subs: Vec<Map<String, Value>> = (1..200)
            .flat_map(|i| generate_customer(&shape, i).subscriptions)
            .collect();
        let avg = subs.len() as f64 / 199.0;
        assert!((8.0..=12.0).contains(&avg), "about 10 per customer: {avg}");
        let has = |f: &dyn Fn(&Map<String, Value>) -> bool| subs.iter().any(f);
        for (status, _) in STATUSES {
            assert!(has(&|s| s["status"] == *status), "status {status}");
        }
        for cycle in CYCLES {
            assert!(has(&|s| s["billingCycle"] == *cycle), "cycle {cycle}");
        }
        for term in TERMS {
            assert!(
                has(&|s| s.get("termDuration") == Some(&json!(term))),
                "{term}"
            );
        }
        assert!(has(&|s| s["isTrial"] == true));
        assert!(has(&|s| s.get("renewalTermDuration") == Some(&json!(""))));
        assert!(has(&|s| s["orderId"]
            .as_str()
            .is_some_and(|o| o.len() == 12)));
        assert!(has(&|s| s["partnerId"] != SEED_MPN_ID));
        assert!(has(&|s| !s.contains_key("productType")), "legacy shape");
        assert!(has(&|s| s["creationDate"].as_str().is_some_and(|d| d
            .len()
            == "2024-06-05T19:26:38.3667635Z".len())));
    }
}
