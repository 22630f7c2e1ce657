//! The customer list from a CSV file: `customer_id,mpn_id,name` (mpn_id and name optional).
//! A bad row is reported with its line number and skipped; the others go on. Duplicates are
//! merged. Pure parsing, tested without a database.

use std::collections::HashMap;

use uuid::Uuid;

use crate::config::is_mpn_id;

/// A customer to sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCustomer {
    pub id: Uuid,
    /// The partner whose subscriptions to fetch; `None` = every partner's.
    pub mpn_id: Option<String>,
    pub name: Option<String>,
    pub domain: Option<String>,
    pub relationship: Option<String>,
}

/// A row that was skipped or merged, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CustomerList {
    pub customers: Vec<ListedCustomer>,
    pub problems: Vec<LineProblem>,
    /// Customers named on lines that were skipped for another reason than their id (an
    /// unreadable `mpn_id`): not synced this pass, and not marked as having left the list.
    pub skipped_ids: Vec<Uuid>,
}

/// The file as a whole cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CustomerFileError {
    #[error("cannot read the customer file {path}: {reason}. Check customers.file")]
    Read { path: String, reason: String },
    #[error(
        "the customer file {path} has no customer_id column in its header line; expected a header such as customer_id,mpn_id,name"
    )]
    NoIdColumn { path: String },
}

/// The 1-based line where the record at byte offset `byte` begins. Counted here because the
/// csv crate's positions point at the blank lines it skips before a record. Records come in
/// order, so each count goes on from the previous one: one scan of the file in all, not one
/// per record (which made a 10,000-line file cost a second).
struct LineCounter<'a> {
    bytes: &'a [u8],
    /// Where counting stopped, and the newlines before it.
    at: usize,
    newlines: u64,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> LineCounter<'a> {
        LineCounter {
            bytes: text.as_bytes(),
            at: 0,
            newlines: 0,
        }
    }

    fn line_at(&mut self, byte: u64) -> u64 {
        let bytes = self.bytes;
        let mut end = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
        while end < bytes.len() && matches!(bytes[end], b'\n' | b'\r') {
            end += 1;
        }
        if end < self.at {
            self.at = 0;
            self.newlines = 0;
        }
        self.newlines += bytes[self.at..end].iter().filter(|b| **b == b'\n').count() as u64;
        self.at = end;
        self.newlines + 1
    }
}

/// Parses the CSV text. `default_mpn_id` fills rows without an mpn_id.
pub fn parse_customer_csv(
    text: &str,
    path: &str,
    default_mpn_id: Option<&str>,
) -> Result<CustomerList, CustomerFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| CustomerFileError::Read {
            path: path.to_string(),
            reason: e.to_string(),
        })?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let id_col = column("customer_id").ok_or_else(|| CustomerFileError::NoIdColumn {
        path: path.to_string(),
    })?;
    let mpn_col = column("mpn_id");
    let name_col = column("name");

    let mut list = CustomerList::default();
    let mut lines = LineCounter::new(text);
    let mut index_of: HashMap<Uuid, (usize, u64)> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| lines.line_at(p.byte())).unwrap_or(0);
                list.problems.push(LineProblem {
                    line,
                    message: format!("unreadable CSV row ({e}); skipped"),
                });
                continue;
            }
        };
        let line = record
            .position()
            .map(|p| lines.line_at(p.byte()))
            .unwrap_or(0);
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        let raw_id = record.get(id_col).unwrap_or_default();
        let Ok(id) = Uuid::try_parse(raw_id) else {
            list.problems.push(LineProblem {
                line,
                message: format!(
                    "customer_id {raw_id:?} is not a GUID (the customer's Microsoft ID, e.g. c501c3c4-d776-40ef-9ecf-9cefb59442c1); row skipped"
                ),
            });
            continue;
        };
        let field = |col: Option<usize>| {
            col.and_then(|c| record.get(c))
                .map(str::to_string)
                .filter(|v| !v.is_empty())
        };
        let mpn_id = field(mpn_col);
        if let Some(m) = &mpn_id {
            if !is_mpn_id(m) {
                list.problems.push(LineProblem {
                    line,
                    message: format!(
                        "mpn_id {m:?} is not a Partner ID (digits only, e.g. 4847383); row skipped"
                    ),
                });
                list.skipped_ids.push(id);
                continue;
            }
        }
        let name = field(name_col);
        if let Some((at, first_line)) = index_of.get(&id).copied() {
            let existing = &mut list.customers[at];
            let mut note = format!("customer {id} repeats line {first_line}; merged");
            match (&existing.mpn_id, &mpn_id) {
                (None, Some(_)) => existing.mpn_id = mpn_id.clone(),
                (Some(a), Some(b)) if a != b => {
                    note = format!(
                        "customer {id} repeats line {first_line} with another mpn_id ({b} instead of {a}); the first is kept"
                    );
                }
                _ => {}
            }
            if existing.name.is_none() {
                existing.name = name;
            }
            list.problems.push(LineProblem {
                line,
                message: note,
            });
            continue;
        }
        index_of.insert(id, (list.customers.len(), line));
        list.customers.push(ListedCustomer {
            id,
            mpn_id,
            name,
            domain: None,
            relationship: None,
        });
    }
    if let Some(default) = default_mpn_id {
        for c in &mut list.customers {
            if c.mpn_id.is_none() {
                c.mpn_id = Some(default.to_string());
            }
        }
    }
    Ok(list)
}

/// Merges customers listed more than once (the Partner Center customer list can repeat one
/// across pages): the first listing is kept, gaps in it filled from the later ones. Returns the
/// list and how many listings were merged away.
pub fn merge_duplicates(listed: Vec<ListedCustomer>) -> (Vec<ListedCustomer>, usize) {
    crate::partner_center::paging::merge_repeats(listed, |c| c.id, merge_into)
}

/// Fills the gaps of the first listing of a customer from a later one.
pub fn merge_into(first: &mut ListedCustomer, later: ListedCustomer) {
    first.mpn_id = first.mpn_id.take().or(later.mpn_id);
    first.name = first.name.take().or(later.name);
    first.domain = first.domain.take().or(later.domain);
    first.relationship = first.relationship.take().or(later.relationship);
}

/// Reads and parses the file at `path`.
pub fn read_customer_file(
    path: &std::path::Path,
    default_mpn_id: Option<&str>,
) -> Result<CustomerList, CustomerFileError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| CustomerFileError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    parse_customer_csv(&text, &shown, default_mpn_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_listings_merge_into_the_first() {
        let id = Uuid::from_u128(7);
        let other = Uuid::from_u128(8);
        let c = |id: Uuid, name: Option<&str>, domain: Option<&str>| ListedCustomer {
            id,
            mpn_id: None,
            name: name.map(str::to_string),
            domain: domain.map(str::to_string),
            relationship: None,
        };
        let (merged, repeats) = merge_duplicates(vec![
            c(id, Some("Contoso"), None),
            c(other, None, None),
            c(id, Some("Contoso Ltd"), Some("contoso.example")),
        ]);
        assert_eq!(repeats, 1);
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[0].name.as_deref(),
            Some("Contoso"),
            "the first is kept"
        );
        assert_eq!(
            merged[0].domain.as_deref(),
            Some("contoso.example"),
            "gaps filled"
        );
        assert_eq!(merged[1].id, other);
    }

    const A: &str = "c501c3c4-d776-40ef-9ecf-9cefb59442c1";
    const B: &str = "3fdf03e7-3ec2-445e-81c5-54bd0546984d";

    #[test]
    fn good_rows_bad_rows_and_duplicates() {
        let text = format!(
            "customer_id,mpn_id,name\n{A},4847383,\"Contoso, Ltd\"\nnot-a-guid,1,x\n{B},48A,y\n{B},,Fabrikam\n{A},,\n\n{B}\n"
        );
        let list = parse_customer_csv(&text, "c.csv", Some("999")).expect("parses");
        assert_eq!(list.customers.len(), 2);
        assert_eq!(list.customers[0].name.as_deref(), Some("Contoso, Ltd"));
        assert_eq!(list.customers[0].mpn_id.as_deref(), Some("4847383"));
        assert_eq!(
            list.customers[1].mpn_id.as_deref(),
            Some("999"),
            "default fills"
        );
        assert_eq!(list.customers[1].name.as_deref(), Some("Fabrikam"));
        let lines: Vec<u64> = list.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![3, 4, 6, 8]);
        assert!(list.problems[0].message.contains("not a GUID"));
        assert!(list.problems[1].message.contains("not a Partner ID"));
        assert!(list.problems[2].message.contains("repeats line 2"));
    }

    #[test]
    fn optional_columns_may_be_missing_and_columns_reordered() {
        let list = parse_customer_csv(&format!("name,customer_id\nX,{A}\n"), "c.csv", None)
            .expect("parses");
        assert_eq!(list.customers[0].name.as_deref(), Some("X"));
        assert_eq!(list.customers[0].mpn_id, None);
        let list = parse_customer_csv(&format!("\u{feff}customer_id\n{A}\n"), "c.csv", None)
            .expect("BOM tolerated");
        assert_eq!(list.customers.len(), 1);
    }

    #[test]
    fn a_file_without_the_id_column_is_refused() {
        let err = parse_customer_csv("id,name\nx,y\n", "c.csv", None).expect_err("no column");
        assert!(err.to_string().contains("customer_id"));
    }
}
