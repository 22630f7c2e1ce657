//! One pager for every paged collection (customers, subscriptions, managed services), and the
//! proof that a collection was read whole.
//!
//! Partner Center pages by `links.next` (a relative uri, with or without `/v1/`, and headers
//! such as `MS-ContinuationToken` to send exactly as given). A collection counts as read whole
//! only when every page had an `items` array and the items received agree with `totalCount`
//! where it is sent: either each page's own count (seek-paged lists) or the whole collection's
//! (the first page's `totalCount` equals all items received). Only then does the pager hand
//! out a [`Complete`], and only a [`Complete`] can tell the sync that something was removed.

use std::collections::HashSet;
use std::ops::Deref;

use reqwest::Url;
use serde_json::value::RawValue;

use super::models::{self, ParseError};
use super::{ApiError, PartnerCenterClient, resolve_next};

/// A collection is not expected to have more pages than this; more means a paging loop.
const MAX_PAGES: u32 = 10_000;

/// Every item of a collection, proven complete by the pager (see the module documentation).
/// It has no public constructor: code outside this module can read one but never make one, so
/// no list of unknown completeness can reach the code that records removals.
#[derive(Debug, Clone, PartialEq)]
pub struct Complete<T> {
    items: Vec<T>,
}

impl<T> Complete<T> {
    /// A list that is whole by construction, not by a pager's check: the customer file pcsync
    /// was given (it is the list), or ids derived from a complete list.
    pub(crate) fn whole(items: Vec<T>) -> Complete<T> {
        Complete { items }
    }

    /// The same proof over items derived one by one.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Complete<U> {
        Complete {
            items: self.items.into_iter().map(f).collect(),
        }
    }

    /// The same list with repeated items merged into the first (a collection can repeat an
    /// item across pages): still complete. Returns how many were merged away.
    pub fn merge_repeats<K: std::hash::Hash + Eq>(
        self,
        key: impl Fn(&T) -> K,
        merge: impl FnMut(&mut T, T),
    ) -> (Complete<T>, usize) {
        let (items, repeats) = merge_repeats(self.items, key, merge);
        (Complete { items }, repeats)
    }

    /// The same proof over items derived one by one (typed objects from the raw ones).
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Complete<U>, E> {
        Ok(Complete {
            items: self.items.into_iter().map(f).collect::<Result<_, _>>()?,
        })
    }

    pub fn into_items(self) -> Vec<T> {
        self.items
    }

    /// For unit tests of code that takes a complete list.
    #[cfg(test)]
    pub(crate) fn assumed(items: Vec<T>) -> Complete<T> {
        Complete { items }
    }
}

impl<T> Deref for Complete<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<'a, T> IntoIterator for &'a Complete<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// Merges items with the same key into the first of them, keeping the order of first
/// appearance. Returns the items and how many were merged away.
pub fn merge_repeats<T, K: std::hash::Hash + Eq>(
    items: Vec<T>,
    key: impl Fn(&T) -> K,
    mut merge: impl FnMut(&mut T, T),
) -> (Vec<T>, usize) {
    let mut index_of: std::collections::HashMap<K, usize> =
        std::collections::HashMap::with_capacity(items.len());
    let mut merged: Vec<T> = Vec::with_capacity(items.len());
    let mut repeats = 0;
    for item in items {
        let k = key(&item);
        match index_of.get(&k) {
            Some(&at) => {
                repeats += 1;
                merge(&mut merged[at], item);
            }
            None => {
                index_of.insert(k, merged.len());
                merged.push(item);
            }
        }
    }
    (merged, repeats)
}

/// Whether the items received agree with the `totalCount`s sent: every page's count is its
/// own, or the first page's count is the collection's. Pages without a `totalCount` agree.
pub fn counts_agree(pages: &[(Option<u64>, usize)]) -> Result<(), String> {
    let received: usize = pages.iter().map(|(_, n)| n).sum();
    let per_page = pages
        .iter()
        .all(|(total, n)| total.is_none_or(|t| t == *n as u64));
    let whole = pages
        .first()
        .and_then(|(t, _)| *t)
        .is_some_and(|t| t == received as u64);
    if per_page || whole {
        return Ok(());
    }
    let said = pages.first().and_then(|(t, _)| *t).unwrap_or_default();
    Err(format!(
        "totalCount says {said} but {received} items arrived over {} page(s)",
        pages.len()
    ))
}

/// A request to make: the URL and the headers a next link asks for.
type Request = (Url, Vec<(String, String)>);

/// Reads a collection page by page.
pub struct Pager<'a> {
    client: &'a PartnerCenterClient,
    op: String,
    next: Option<Request>,
    /// Links already followed, to stop a server that points back at a page.
    seen: HashSet<Request>,
    /// (`totalCount`, items) of each page so far.
    counts: Vec<(Option<u64>, usize)>,
}

impl<'a> Pager<'a> {
    pub(super) fn new(client: &'a PartnerCenterClient, first: Url, op: String) -> Pager<'a> {
        Pager {
            client,
            op,
            next: Some((first, Vec::new())),
            seen: HashSet::new(),
            counts: Vec::new(),
        }
    }

    fn error(&self, e: String) -> ApiError {
        self.client.decode_error(&self.op, ParseError(e))
    }

    /// The next page: its items and, on the last page, why the counts of all pages disagree
    /// (`None` when they agree). `None` after the last page.
    async fn fetch_next(
        &mut self,
    ) -> Result<Option<(Vec<Box<RawValue>>, Option<String>)>, ApiError> {
        let Some(request) = self.next.take() else {
            return Ok(None);
        };
        if self.counts.len() as u32 >= MAX_PAGES || !self.seen.insert(request.clone()) {
            return Err(self.error("the collection does not end (a page repeats)".into()));
        }
        let (url, headers) = request;
        let page = self.client.get_page(&url, &headers, &self.op).await?;
        self.counts.push((page.total_count, page.items.len()));
        let mut disagreement = None;
        match page.next {
            Some(link) => {
                let url = resolve_next(&self.client.base, &link.uri).map_err(|e| self.error(e))?;
                self.next = Some((url, link.headers));
            }
            None => disagreement = counts_agree(&self.counts).err(),
        }
        Ok(Some((page.items, disagreement)))
    }

    /// The next page's items, `None` after the last page. The last page is handed out only
    /// when the counts of all pages agree.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Box<RawValue>>>, ApiError> {
        match self.fetch_next().await? {
            None => Ok(None),
            Some((_, Some(e))) => Err(self.client.incomplete(&self.op, e)),
            Some((items, None)) => Ok(Some(items)),
        }
    }

    /// Every item of every page, proven complete.
    pub async fn collect(mut self) -> Result<Complete<Box<RawValue>>, ApiError> {
        let mut items = Vec::new();
        while let Some(page) = self.next_page().await? {
            items.extend(page);
        }
        Ok(Complete { items })
    }
}

/// The customer list, one page at a time.
pub struct CustomerPager<'a> {
    pub(super) pager: Pager<'a>,
}

/// Something that keeps a customer-list answer from being complete.
#[derive(Debug, Clone, PartialEq)]
pub struct ListProblem {
    /// The customer an unreadable item is about, when its id reads.
    pub customer_id: Option<uuid::Uuid>,
    pub message: String,
}

/// The customer list as Partner Center answered it: proven complete, or not. Only a complete
/// list can say that a customer left; an incomplete one names the customers it does contain.
#[derive(Debug, Clone)]
pub enum CustomerAnswer {
    Complete(Complete<models::Customer>),
    Incomplete {
        customers: Vec<models::Customer>,
        problems: Vec<ListProblem>,
    },
}

impl CustomerPager<'_> {
    /// Every customer of every page. The first page failing is an error (nothing is known);
    /// after it, counts that disagree, a page that still fails after retries and an item that
    /// cannot be read make the answer [`CustomerAnswer::Incomplete`], with what did arrive.
    pub async fn collect_all(mut self) -> Result<CustomerAnswer, ApiError> {
        let mut customers = Vec::new();
        let mut problems = Vec::new();
        let mut pages = 0u32;
        loop {
            let fetched = match self.pager.fetch_next().await {
                Ok(f) => f,
                Err(ApiError::Cancelled) => return Err(ApiError::Cancelled),
                Err(e) if pages == 0 => return Err(e),
                Err(e) => {
                    problems.push(ListProblem {
                        customer_id: None,
                        message: format!(
                            "page {} of the customer list could not be read, so the list stops after {} customers: {e}",
                            pages + 1,
                            customers.len()
                        ),
                    });
                    break;
                }
            };
            let Some((items, disagreement)) = fetched else {
                break;
            };
            pages += 1;
            for item in &items {
                let unreadable = |customer_id, e: &dyn std::fmt::Display| ListProblem {
                    customer_id,
                    message: format!("a customer-list item could not be read: {e}"),
                };
                match models::object_of(item) {
                    Err(e) => problems.push(unreadable(None, &e)),
                    Ok(m) => match models::Customer::from_json(&m) {
                        Ok(c) => customers.push(c),
                        Err(e) => problems.push(unreadable(models::Customer::id_of(&m), &e)),
                    },
                }
            }
            if let Some(e) = disagreement {
                problems.push(ListProblem {
                    customer_id: None,
                    message: format!("the customer list cannot be proven complete: {e}"),
                });
            }
        }
        if problems.is_empty() {
            Ok(CustomerAnswer::Complete(Complete { items: customers }))
        } else {
            Ok(CustomerAnswer::Incomplete {
                customers,
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_per_page_or_for_the_whole_collection() {
        assert!(counts_agree(&[(Some(3), 3)]).is_ok());
        assert!(
            counts_agree(&[(None, 3)]).is_ok(),
            "no count, nothing to check"
        );
        assert!(counts_agree(&[(Some(0), 0)]).is_ok());
        // Seek paging: each page counts itself.
        assert!(counts_agree(&[(Some(2), 2), (Some(2), 2), (Some(1), 1)]).is_ok());
        // The collection's count on the first page.
        assert!(counts_agree(&[(Some(5), 2), (Some(5), 2), (Some(5), 1)]).is_ok());
        assert!(counts_agree(&[(Some(5), 2), (None, 3)]).is_ok());
        let e = counts_agree(&[(Some(4), 1)]).expect_err("short");
        assert_eq!(e, "totalCount says 4 but 1 items arrived over 1 page(s)");
        assert!(counts_agree(&[(Some(1), 2)]).is_err(), "more than said");
        assert!(counts_agree(&[(Some(5), 2), (Some(5), 2)]).is_err());
    }
}
