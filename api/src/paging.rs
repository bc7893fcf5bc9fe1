//! The one way every list of the native API pages: `?limit=` (1-1000,
//! default 100) and `?after=` (the `next` of the previous page), answered as
//! `Listing { items, next }`. The instance list pages in SQL on its keyset
//! (`seq`); the other lists are small per project and page here, over the
//! full list in its usual order, with an opaque offset cursor.

use kumo_wire::api::{ListQuery, Listing, DEFAULT_PAGE, MAX_PAGE};

use crate::error::ApiError;

/// The page size asked for, checked.
pub fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!("limit must be 1-{MAX_PAGE}, not {limit}")))
    }
}

/// One page of `items` (already filtered and ordered) as `q` asks for.
pub fn page<T>(items: Vec<T>, q: &ListQuery) -> Result<Listing<T>, ApiError> {
    page_of(items, q.limit, q.after.as_deref())
}

/// [`page`] with the paging fields given separately.
pub fn page_of<T>(items: Vec<T>, limit_asked: Option<u32>, after: Option<&str>) -> Result<Listing<T>, ApiError> {
    let limit = limit(limit_asked)? as usize;
    let start = match after {
        None => 0,
        Some(cursor) => cursor.parse::<usize>().map_err(|_| {
            ApiError::BadRequest(format!("'{cursor}' is not a page cursor of this list (pass its `next`)"))
        })?,
    };
    let total = items.len();
    let end = start.saturating_add(limit).min(total);
    let next = (end < total).then(|| end.to_string());
    let items = items.into_iter().skip(start).take(limit).collect();
    Ok(Listing { items, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_the_list_once_in_order() {
        let items: Vec<u32> = (0..250).collect();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = page_of(items.clone(), Some(100), after.as_deref()).expect("page");
            seen.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn bad_limits_and_cursors_are_refused() {
        assert!(page_of(vec![1], Some(0), None).is_err());
        assert!(page_of(vec![1], Some(1001), None).is_err());
        assert!(page_of(vec![1], None, Some("i-123")).is_err());
        let last = page_of(vec![1, 2], None, Some("5")).expect("past the end");
        assert!(last.items.is_empty() && last.next.is_none());
    }
}
