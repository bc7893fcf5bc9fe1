//! EC2's XML: `<{Action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">`
//! with a `requestId`, lists as `<xxxSet><item>…</item></xxxSet>` (an empty
//! list is still an element), and the error document.

use std::fmt::{Display, Write};

use kumo_wire::Timestamp;

/// The 2016-11-15 namespace.
pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Escapes text for an element body.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

/// Appends `s` to `out`, escaped for an element body.
fn push_escaped(out: &mut String, s: &str) {
    let plain =
        |b: u8| !matches!(b, b'<' | b'>' | b'&' | b'"' | b'\'') && (b >= 0x20 || matches!(b, b'\n' | b'\r' | b'\t'));
    if s.bytes().all(plain) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters; console logs may hold them.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => out.push(c),
        }
    }
}

/// A `fmt::Write` that escapes into a body: values are formatted straight into it.
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// EC2's time format: RFC 3339 in UTC with milliseconds.
pub fn time(t: Timestamp) -> String {
    t.to_string()
}

/// Builds one response body.
#[derive(Debug)]
pub struct Xml {
    buf: String,
}

impl Xml {
    /// Starts `<{action}Response>` with its `requestId`.
    pub fn response(action: &str, request_id: &str) -> Self {
        let mut buf = String::with_capacity(512);
        let _ = write!(
            buf,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{NAMESPACE}\"><requestId>{request_id}</requestId>"
        );
        Self { buf }
    }

    /// Makes room for `bytes` more (a large answer then grows without copies).
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    /// Opens an element.
    pub fn open(&mut self, name: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// Closes an element.
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// `<name>value</name>`, escaped (formatted straight into the body).
    pub fn leaf(&mut self, name: &str, value: impl Display) -> &mut Self {
        self.open(name);
        let _ = write!(Escaped(&mut self.buf), "{value}");
        self.close(name)
    }

    /// A leaf only when there is a value.
    pub fn opt(&mut self, name: &str, value: Option<impl Display>) -> &mut Self {
        if let Some(v) = value {
            self.leaf(name, v);
        }
        self
    }

    /// `<name><item>…</item>…</name>`, present even when `items` is empty.
    pub fn set<T>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        self.open(name);
        for item in items {
            self.open("item");
            each(self, item);
            self.close("item");
        }
        self.close(name)
    }

    /// `<name><item>a</item><item>b</item></name>`: a list of strings.
    pub fn strings<T: Display>(&mut self, name: &str, items: impl IntoIterator<Item = T>) -> &mut Self {
        self.open(name);
        for item in items {
            self.leaf("item", item);
        }
        self.close(name)
    }

    /// An element with children written by `f`.
    pub fn with(&mut self, name: &str, f: impl FnOnce(&mut Self)) -> &mut Self {
        self.open(name);
        f(self);
        self.close(name)
    }

    /// A `tagSet`.
    pub fn tags(&mut self, tags: &[(String, String)]) -> &mut Self {
        self.set("tagSet", tags, |x, (k, v)| {
            x.leaf("key", k).leaf("value", v);
        })
    }

    /// Closes the response.
    pub fn finish(mut self, action: &str) -> String {
        let _ = write!(self.buf, "</{action}Response>");
        self.buf
    }
}

/// EC2's error document.
pub fn error_document(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sets_are_elements_and_text_is_escaped() {
        let mut x = Xml::response("DescribeThings", "req-1");
        x.set("thingSet", Vec::<u8>::new(), |_, _| {});
        x.leaf("name", "a<b & 'c'\u{1}");
        let body = x.finish("DescribeThings");
        assert_eq!(
            body,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeThingsResponse xmlns=\"{NAMESPACE}\"><requestId>req-1</requestId>\
                 <thingSet></thingSet><name>a&lt;b &amp; &apos;c&apos;</name></DescribeThingsResponse>"
            )
        );
    }

    #[test]
    fn error_documents_have_ec2s_shape() {
        assert_eq!(
            error_document("InvalidAction", "no <such>", "r"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidAction</Code>\
             <Message>no &lt;such&gt;</Message></Error></Errors><RequestID>r</RequestID></Response>"
        );
    }
}
