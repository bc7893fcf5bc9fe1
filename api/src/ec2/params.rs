//! The Query protocol's flattened parameters: `InstanceId.1`,
//! `Filter.1.Name`, `Filter.1.Value.1`, `TagSpecification.1.Tag.1.Key`.

use std::collections::BTreeMap;

use base64::Engine;

use super::errors::{Ec2Error, Ec2Result};

/// The parameters of one request (query string and form body merged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, String>,
}

/// A `Filter.N`: a name and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// e.g. `instance-state-name`, `tag:Name`.
    pub name: String,
    /// Any of these matches (`*` and `?` are wildcards).
    pub values: Vec<String>,
}

impl Params {
    /// Parses the query string and an `application/x-www-form-urlencoded` body.
    ///
    /// A parameter given twice (twice in one place, or in both the query and
    /// the body) is refused: the body never overrides a query parameter, and
    /// no reader has to guess which copy counts.
    pub fn from_request(query: &str, body: &[u8]) -> Ec2Result<Self> {
        let mut map = BTreeMap::new();
        let mut put = |k: String, v: String, place: &str| match map.entry(k) {
            std::collections::btree_map::Entry::Occupied(e) => Err(Ec2Error::invalid_value(format!(
                "the parameter {} is given more than once (again in the {place})",
                e.key()
            ))),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(v);
                Ok(())
            }
        };
        for (k, v) in super::sigv4::query_pairs(query) {
            if !k.starts_with("X-Amz-") {
                put(k, v, "query string")?;
            }
        }
        if !body.is_empty() {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| Ec2Error::invalid_value(format!("the body is not form-encoded: {e}")))?;
            for (k, v) in pairs {
                put(k, v, "body")?;
            }
        }
        Ok(Self { map })
    }

    /// Parameters from pairs (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self { map: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }

    /// Every parameter, as pairs.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// One parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// A parameter that must be there.
    pub fn required(&self, name: &str) -> Ec2Result<&str> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| Ec2Error::missing(name))
    }

    /// A boolean (`true`/`false`), false when absent.
    pub fn flag(&self, name: &str) -> Ec2Result<bool> {
        match self.get(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(Ec2Error::invalid_value(format!("{name} must be true or false, not '{v}'"))),
        }
    }

    /// An integer parameter.
    pub fn int(&self, name: &str) -> Ec2Result<Option<i64>> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| Ec2Error::invalid_value(format!("{name} must be an integer, not '{v}'")))
            })
            .transpose()
    }

    /// A base64 parameter, decoded.
    pub fn base64(&self, name: &str) -> Ec2Result<Option<Vec<u8>>> {
        self.get(name)
            .map(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map_err(|_| Ec2Error::invalid_value(format!("{name} is not valid base64")))
            })
            .transpose()
    }

    /// The group of parameters under `prefix.N.`, in order of N, each with the prefix removed.
    pub fn groups(&self, prefix: &str) -> Vec<Params> {
        let mut by_index: BTreeMap<u32, Params> = BTreeMap::new();
        let start = format!("{prefix}.");
        for (k, v) in self.map.range(start.clone()..) {
            let Some(rest) = k.strip_prefix(&start) else { break };
            let (n, field) = rest.split_once('.').unwrap_or((rest, ""));
            let Ok(n) = n.parse::<u32>() else { continue };
            by_index.entry(n).or_default().map.insert(field.to_owned(), v.clone());
        }
        by_index.into_values().collect()
    }

    /// The list `prefix.1`, `prefix.2`, ….
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.groups(prefix).into_iter().filter_map(|g| g.get("").map(str::to_owned)).collect()
    }

    /// `Filter.N.Name` / `Filter.N.Value.M`.
    pub fn filters(&self) -> Ec2Result<Vec<Filter>> {
        self.groups("Filter")
            .into_iter()
            .map(|g| {
                let name = g.get("Name").ok_or_else(|| Ec2Error::missing("Filter.N.Name"))?.to_owned();
                Ok(Filter { name, values: g.list("Value") })
            })
            .collect()
    }

    /// `Tag.N.Key` / `Tag.N.Value` pairs.
    pub fn tags(&self, prefix: &str) -> Ec2Result<Vec<(String, Option<String>)>> {
        self.groups(prefix)
            .into_iter()
            .map(|g| {
                let key = g.get("Key").ok_or_else(|| Ec2Error::missing(&format!("{prefix}.N.Key")))?.to_owned();
                Ok((key, g.get("Value").map(str::to_owned)))
            })
            .collect()
    }

    /// Tags that `TagSpecification.N` asks for on resources of `resource_type`.
    pub fn tag_specifications(&self, resource_type: &str) -> Ec2Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for spec in self.groups("TagSpecification") {
            let kind = spec.required("ResourceType")?;
            if kind != resource_type {
                continue;
            }
            for (k, v) in spec.tags("Tag")? {
                out.push((k, v.unwrap_or_default()));
            }
        }
        Ok(out)
    }
}

/// EC2 filter wildcards: `*` any run, `?` one character.
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl Filter {
    /// Whether any of the filter's values matches `value`.
    pub fn matches(&self, value: &str) -> bool {
        self.values.iter().any(|p| glob(p, value))
    }

    /// Whether any value matches any of `values`.
    pub fn matches_any<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> bool {
        values.into_iter().any(|v| self.matches(v))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn flattened_lists_and_structures_parse_in_index_order() {
        let p = Params::from_pairs([
            ("InstanceId.2", "i-b"),
            ("InstanceId.10", "i-c"),
            ("InstanceId.1", "i-a"),
            ("Filter.1.Name", "tag:Name"),
            ("Filter.1.Value.1", "web*"),
            ("Filter.1.Value.2", "db"),
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.1.Tag.1.Key", "Name"),
            ("TagSpecification.1.Tag.1.Value", "web"),
            ("TagSpecification.2.ResourceType", "volume"),
            ("TagSpecification.2.Tag.1.Key", "x"),
        ]);
        assert_eq!(p.list("InstanceId"), ["i-a", "i-b", "i-c"]);
        let f = p.filters().unwrap_or_default();
        assert_eq!(f, [Filter { name: "tag:Name".into(), values: vec!["web*".into(), "db".into()] }]);
        assert!(f[0].matches("web-1") && f[0].matches("db") && !f[0].matches("dbx"));
        assert_eq!(p.tag_specifications("instance").unwrap_or_default(), [("Name".to_owned(), "web".to_owned())]);
        assert_eq!(p.tag_specifications("volume").unwrap_or_default(), [("x".to_owned(), String::new())]);
    }

    #[test]
    fn wildcards() {
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(glob("*-1", "web-1"));
        assert!(!glob("a*c", "abd"));
    }

    #[test]
    fn a_parameter_given_twice_is_refused_wherever_it_is() {
        for (query, body) in [("Action=A&Action=B", ""), ("Action=A", "Action=B"), ("", "Action=A&Action=B")] {
            let e = Params::from_request(query, body.as_bytes()).unwrap_err();
            assert!(e.message.contains("Action is given more than once"), "{query} {body}: {}", e.message);
        }
        let p = Params::from_request("Action=A&X-Amz-Date=1", b"Version=2016-11-15").unwrap_or_default();
        assert_eq!(p.get("Action"), Some("A"));
        assert_eq!(p.get("X-Amz-Date"), None);
    }

    /// Cases per property: `PROPTEST_CASES` (the suite runs 2,000; run more by hand).
    pub(crate) fn cases() -> proptest::test_runner::Config {
        let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
        proptest::test_runner::Config::with_cases(n)
    }

    proptest::proptest! {
        #![proptest_config(cases())]

        /// Any query string and body: a clear error or parameters, never a panic,
        /// and every reader of the parameters copes with what came in.
        #[test]
        fn the_query_parser_never_panics(
            query in "([A-Za-z.%0-9=&+]|Filter\\.|\\.Value\\.|Tag\\.|[0-9]{1,12}|%[0-9A-Fa-f]{0,2}|\\PC){0,40}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
        ) {
            match Params::from_request(&query, &body) {
                Ok(p) => {
                    let _ = p.filters();
                    let _ = p.tags("Tag");
                    let _ = p.tag_specifications("instance");
                    let _ = p.list("InstanceId");
                    let _ = p.int("MaxResults");
                    let _ = p.flag("DryRun");
                    let _ = p.base64("UserData");
                }
                Err(e) => proptest::prop_assert!(!e.message.is_empty()),
            }
        }

        /// Wildcard matching terminates and never panics on any pattern.
        #[test]
        fn glob_never_panics(pattern in "[a*?]{0,20}", value in "[ab]{0,30}") {
            let _ = glob(&pattern, &value);
        }
    }
}
