//! Change detection: a customer's freshly fetched objects against what is stored, as pure
//! code. It takes only a [`Complete`] list, which the pager alone can make, so a missing object
//! is a real removal (an empty complete answer is a real zero); and it removes only within the
//! [`Scope`] the fetch asked for (`?mpn_id=X` says nothing of another partner's rows).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::partner_center::Complete;
use crate::partner_center::fields::Field;

/// Which stored rows one fetch speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No partner filter: every stored row of the customer.
    AllPartners,
    /// `?mpn_id=X`: only rows whose partner is X.
    Partner(String),
}

impl Scope {
    pub fn of(mpn_id: Option<&str>) -> Scope {
        match mpn_id {
            Some(m) => Scope::Partner(m.to_string()),
            None => Scope::AllPartners,
        }
    }

    /// Whether a fetch in this scope would have returned a row of `partner`.
    pub fn covers(&self, partner: Option<&str>) -> bool {
        match self {
            Scope::AllPartners => true,
            Scope::Partner(p) => partner == Some(p.as_str()),
        }
    }
}

/// An object pcsync keeps a row of: its id, its business fields, its raw JSON.
pub trait Entity {
    /// `subscription` or `managed_service`, as in `change_events.entity`.
    const KIND: &'static str;
    /// The business fields, in the order of [`Entity::values`].
    const FIELDS: &'static [Field];
    fn id(&self) -> &str;
    /// The business fields as text (`None` for no value); what change events show.
    fn values(&self) -> Vec<Option<String>>;
    /// The object's whole JSON.
    fn raw_json(&self) -> Value;
    /// Whether the two objects' whole JSON is the same (keys in any order).
    fn same_raw(&self, other: &Self) -> bool {
        self.raw_json() == other.raw_json()
    }
    /// The partner that sold it, for objects a partner filter applies to.
    fn partner(&self) -> Option<&str> {
        None
    }
    /// The business fields whose values differ from `new`'s, as text.
    fn changed_fields(&self, new: &Self) -> Vec<FieldChange> {
        self.values()
            .into_iter()
            .zip(new.values())
            .zip(Self::FIELDS)
            .filter(|((o, n), _)| o != n)
            .map(|((old, new), field)| FieldChange {
                field: field.column,
                old,
                new,
            })
            .collect()
    }
}

/// One business field that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub field: &'static str,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// What to do with one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a, E> {
    /// Never seen before.
    Added(&'a E),
    /// Stored as removed, returned again: added again; the fields that differ from the
    /// removed version are listed for the log.
    Readded(&'a E, Vec<FieldChange>),
    /// Present before and now, with business fields that changed.
    Changed(&'a E, Vec<FieldChange>),
    /// Same business fields, other raw JSON (a field without a column): the row is refreshed
    /// silently, with no event and no new history version.
    RawChanged(&'a E),
    /// Present before, within the fetch's scope, absent from the complete fetch.
    Removed(String),
    /// Present before but outside the fetch's scope (the partner filter changed): no longer
    /// followed. Not a removal: Partner Center may well still have it.
    Untracked(String),
    /// Untracked before, returned again: followed again; the fields that differ from the
    /// last tracked version are listed for the log.
    Tracked(&'a E, Vec<FieldChange>),
}

/// A stored row: the entity as last stored, and whether it is marked removed or untracked.
pub struct Stored<E> {
    pub entity: E,
    pub removed: bool,
    pub untracked: bool,
    /// Whether the stored raw JSON equals the fetched one, when the database already compared
    /// them (so the stored JSON need not be read back); `None`: compare `entity.raw()`.
    pub raw_same: Option<bool>,
}

fn field_changes<E: Entity>(old: &E, new: &E) -> Vec<FieldChange> {
    old.changed_fields(new)
}

/// The operations that turn `stored` into the complete `fetched` list, for the rows `scope`
/// covers. Unchanged rows give no operation. If the fetch holds an id twice, the first counts.
pub fn diff<'a, E: Entity>(
    fetched: &'a Complete<E>,
    scope: &Scope,
    stored: &[Stored<E>],
) -> Vec<Op<'a, E>> {
    let by_id: HashMap<&str, &Stored<E>> = stored.iter().map(|s| (s.entity.id(), s)).collect();
    let mut seen: HashSet<&str> = HashSet::with_capacity(fetched.len());
    let mut ops = Vec::new();
    for new in fetched.iter() {
        if !seen.insert(new.id()) {
            continue;
        }
        match by_id.get(new.id()) {
            None => ops.push(Op::Added(new)),
            Some(old) if old.removed => ops.push(Op::Readded(new, field_changes(&old.entity, new))),
            Some(old) if old.untracked => {
                ops.push(Op::Tracked(new, field_changes(&old.entity, new)))
            }
            // The database found the same JSON: nothing of it changed.
            Some(old) if old.raw_same == Some(true) => {}
            Some(old) => {
                let changes = field_changes(&old.entity, new);
                if !changes.is_empty() {
                    ops.push(Op::Changed(new, changes));
                } else if !old.raw_same.unwrap_or_else(|| old.entity.same_raw(new)) {
                    ops.push(Op::RawChanged(new));
                }
            }
        }
    }
    for old in stored {
        if old.removed || seen.contains(old.entity.id()) {
            continue;
        }
        if scope.covers(old.entity.partner()) {
            ops.push(Op::Removed(old.entity.id().to_string()));
        } else if !old.untracked {
            ops.push(Op::Untracked(old.entity.id().to_string()));
        }
    }
    ops
}

/// One place where two JSON values differ; `None` is an absent key.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonChange {
    /// Keys from the top, joined by dots: `links.self.uri`.
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// Where two JSON values differ: objects are compared key by key, anything else whole.
pub fn json_changes(old: &Value, new: &Value) -> Vec<JsonChange> {
    let mut out = Vec::new();
    walk(String::new(), Some(old), Some(new), &mut out);
    out
}

fn walk(path: String, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<JsonChange>) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(p, a.get(k), b.get(k), out);
            }
        }
        (a, b) if a != b => out.push(JsonChange {
            path,
            old: a.cloned(),
            new: b.cloned(),
        }),
        _ => {}
    }
}

/// When one answer would remove more than half of a customer's `current` (tracked, present)
/// subscriptions, and at least 2, it is not believed without a second look.
pub fn needs_second_look(removals: usize, current: usize) -> bool {
    removals >= 2 && removals * 2 > current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::resource::Subscription;
    use serde_json::json;

    fn sub(id: &str, status: &str, quantity: i64) -> Subscription {
        let raw = json!({"id": id, "status": status, "quantity": quantity});
        let Value::Object(map) = raw else {
            unreachable!("an object literal")
        };
        Subscription::from_json(map).expect("valid")
    }

    fn stored(s: Subscription, removed: bool) -> Stored<Subscription> {
        Stored {
            entity: s,
            removed,
            untracked: false,
            raw_same: None,
        }
    }

    fn complete(items: Vec<Subscription>) -> Complete<Subscription> {
        Complete::assumed(items)
    }

    fn of_partner(id: &str, partner: &str) -> Subscription {
        let raw = json!({"id": id, "status": "active", "quantity": 1, "partnerId": partner});
        let Value::Object(map) = raw else {
            unreachable!("an object literal")
        };
        Subscription::from_json(map).expect("valid")
    }

    #[test]
    fn added_removed_changed_and_unchanged() {
        let before = vec![
            stored(sub("a", "active", 5), false),
            stored(sub("b", "active", 1), false),
            stored(sub("c", "active", 1), false),
        ];
        let now = vec![
            sub("a", "suspended", 7),
            sub("c", "active", 1),
            sub("d", "active", 2),
        ];
        let now = complete(now);
        let ops = diff(&now, &Scope::AllPartners, &before);
        assert_eq!(ops.len(), 3);
        let Op::Changed(s, changes) = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(s.id, "a");
        assert_eq!(
            changes,
            &vec![
                FieldChange {
                    field: "quantity",
                    old: Some("5".into()),
                    new: Some("7".into())
                },
                FieldChange {
                    field: "status",
                    old: Some("active".into()),
                    new: Some("suspended".into())
                },
            ]
        );
        assert!(matches!(&ops[1], Op::Added(s) if s.id == "d"));
        assert_eq!(ops[2], Op::Removed("b".into()));
    }

    #[test]
    fn an_empty_complete_fetch_removes_everything_present() {
        let before = vec![
            stored(sub("a", "active", 5), false),
            stored(sub("b", "active", 1), true),
        ];
        let nothing = complete(vec![]);
        let ops = diff(&nothing, &Scope::AllPartners, &before);
        assert_eq!(ops, vec![Op::Removed("a".into())], "b was already removed");
    }

    #[test]
    fn a_fetch_for_one_partner_removes_only_that_partners_rows() {
        let before = vec![
            stored(of_partner("mine-1", "111"), false),
            stored(of_partner("mine-2", "111"), false),
            stored(of_partner("theirs", "222"), false),
            stored(sub("unknown-partner", "active", 1), false),
        ];
        let now = complete(vec![of_partner("mine-1", "111")]);
        let ops = diff(&now, &Scope::Partner("111".into()), &before);
        assert_eq!(
            ops,
            vec![
                Op::Removed("mine-2".into()),
                Op::Untracked("theirs".into()),
                Op::Untracked("unknown-partner".into()),
            ]
        );
        // Once untracked, they stay quiet until a fetch covers them again.
        let mut after: Vec<Stored<Subscription>> = before;
        after[1].removed = true;
        after[2].untracked = true;
        after[3].untracked = true;
        assert!(diff(&now, &Scope::Partner("111".into()), &after).is_empty());
        let all = complete(vec![
            of_partner("mine-1", "111"),
            of_partner("theirs", "222"),
        ]);
        let ops = diff(&all, &Scope::AllPartners, &after);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(matches!(&ops[0], Op::Tracked(s, c) if s.id == "theirs" && c.is_empty()));
        assert_eq!(ops[1], Op::Removed("unknown-partner".into()));
    }

    #[test]
    fn a_second_look_is_needed_above_half_and_from_two() {
        assert!(!needs_second_look(1, 1), "one subscription, one removal");
        assert!(!needs_second_look(1, 2));
        assert!(needs_second_look(2, 2));
        assert!(needs_second_look(2, 3));
        assert!(!needs_second_look(2, 4), "half is not more than half");
        assert!(needs_second_look(3, 4));
        assert!(!needs_second_look(0, 0));
    }

    #[test]
    fn a_subscription_back_after_removal_is_added_again() {
        let before = vec![stored(sub("a", "active", 5), true)];
        let now = complete(vec![sub("a", "active", 6)]);
        let ops = diff(&now, &Scope::AllPartners, &before);
        assert!(matches!(&ops[0], Op::Readded(s, c) if s.id == "a" && c.len() == 1));
    }

    #[test]
    fn status_deleted_is_a_change_not_a_removal() {
        let before = vec![stored(sub("a", "active", 5), false)];
        let now = complete(vec![sub("a", "deleted", 5)]);
        let ops = diff(&now, &Scope::AllPartners, &before);
        assert!(
            matches!(&ops[0], Op::Changed(_, c) if c[0].field == "status"
            && c[0].new.as_deref() == Some("deleted"))
        );
    }

    #[test]
    fn raw_only_changes_are_told_apart_from_field_changes() {
        let newer = Subscription::from_json(
            json!({"id": "a", "status": "active", "quantity": 5, "fieldFromTomorrow": true})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .expect("valid");
        let fetched = complete(vec![newer]);
        let ops = diff(
            &fetched,
            &Scope::AllPartners,
            &[stored(sub("a", "active", 5), false)],
        );
        assert!(matches!(&ops[0], Op::RawChanged(_)));
    }

    #[test]
    fn json_changes_name_each_path_that_differs() {
        let old = json!({"a": 1, "links": {"self": {"uri": "/x"}}, "gone": true, "list": [1, 2]});
        let new = json!({"a": 1, "links": {"self": {"uri": "/y"}}, "list": [1, 3], "new": "n"});
        let change = |path: &str, old, new| JsonChange {
            path: path.to_string(),
            old,
            new,
        };
        assert_eq!(
            json_changes(&old, &new),
            vec![
                change("gone", Some(json!(true)), None),
                change("links.self.uri", Some(json!("/x")), Some(json!("/y"))),
                change("list", Some(json!([1, 2])), Some(json!([1, 3]))),
                change("new", None, Some(json!("n"))),
            ]
        );
        assert!(json_changes(&old, &old).is_empty());
    }

    /// SplitMix64, for the randomized property below.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_snapshot(rng: &mut Rng) -> Vec<Subscription> {
        let statuses = ["active", "suspended", "deleted", "expired"];
        let n = rng.below(12);
        let mut ids: Vec<u64> = (0..n).map(|_| rng.below(20)).collect();
        ids.sort();
        ids.dedup();
        ids.iter()
            .map(|i| {
                sub(
                    &format!("s{i}"),
                    statuses[rng.below(4) as usize],
                    rng.below(4) as i64,
                )
            })
            .collect()
    }

    /// Applying the operations to the stored rows gives exactly the fetched snapshot, every
    /// operation is needed, and applying the diff of the result again gives nothing.
    #[test]
    fn property_applying_the_diff_reaches_the_snapshot() {
        let mut rng = Rng(12345);
        for _ in 0..2000 {
            let mut state: Vec<Stored<Subscription>> = Vec::new();
            for _ in 0..4 {
                let fetched = complete(random_snapshot(&mut rng));
                let ops = diff(&fetched, &Scope::AllPartners, &state);
                let mut next: HashMap<String, Stored<Subscription>> =
                    state.drain(..).map(|s| (s.entity.id.clone(), s)).collect();
                for op in &ops {
                    match op {
                        Op::Added(s)
                        | Op::Readded(s, _)
                        | Op::Changed(s, _)
                        | Op::RawChanged(s) => {
                            let was = next.insert(s.id.clone(), stored((*s).clone(), false));
                            match op {
                                Op::Added(_) => assert!(was.is_none()),
                                Op::Readded(..) => assert!(was.is_some_and(|w| w.removed)),
                                _ => assert!(was.is_some_and(|w| !w.removed)),
                            }
                        }
                        Op::Removed(id) => {
                            let row = next.get_mut(id).expect("removed rows exist");
                            assert!(!row.removed, "removed once");
                            row.removed = true;
                        }
                        Op::Untracked(_) | Op::Tracked(..) => {
                            panic!("no partner filter, nothing to untrack: {op:?}")
                        }
                    }
                }
                let present: HashMap<&str, &Subscription> = next
                    .values()
                    .filter(|s| !s.removed)
                    .map(|s| (s.entity.id.as_str(), &s.entity))
                    .collect();
                assert_eq!(present.len(), fetched.len());
                for f in fetched.iter() {
                    assert_eq!(
                        present.get(f.id.as_str()).map(|s| s.values()),
                        Some(f.values())
                    );
                }
                state = next.into_values().collect();
                assert!(
                    diff(&fetched, &Scope::AllPartners, &state).is_empty(),
                    "idempotent"
                );
            }
        }
    }
}
