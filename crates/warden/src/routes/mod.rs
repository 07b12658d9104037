//! The REST routes beyond the model endpoints (`endpoint.rs`): one table (`table.rs`) of
//! every OpenAI path Warden proxies, with what it does to each. Every route runs the same
//! pipeline as the model endpoints (key swap, organization/project headers, end-user
//! identity, limits, one event); the table adds body handling, content checks and object
//! ownership on top.

pub mod batch_file;
pub mod forward;
pub mod multipart;
pub mod ownership;
pub mod table;

use http::Method;

/// A client body relayed upstream unread, cut off at its route's cap.
pub type StreamedBody = http_body_util::Limited<hyper::body::Incoming>;

/// An index into [`table::ROUTES`]; small and `Copy`, so an `Endpoint` stays one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId(pub u16);

impl RouteId {
    pub fn route(self) -> &'static Route {
        &table::ROUTES[usize::from(self.0)]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    fn matches(self, method: &Method) -> bool {
        match self {
            Verb::Get => method == Method::GET,
            Verb::Post => method == Method::POST,
            Verb::Delete => method == Method::DELETE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }
}

/// How the request body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    NoBody,
    /// Read whole (within `max_body_bytes`) and parsed once, like the model endpoints.
    Json,
    /// `multipart/form-data`: streamed through untouched unless a check needs a field, in
    /// which case it is read within the route's cap, checked and rebuilt.
    Multipart,
    /// Either (video creation takes an optional reference image).
    MultipartOrJson,
}

/// What Warden checks on a route besides identity and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    Nothing,
    /// These top-level string fields go through the local filters and moderation.
    Text(&'static [&'static str]),
    /// Conversation `items`, read like a responses `input`.
    Items,
    /// A file whose purpose is `batch` or `fine-tune`: every line checked before upload.
    UploadedFile,
    /// The answer's text goes through the output checks (transcriptions).
    Answer,
}

/// The kinds of object Warden records an owner for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ChatCompletion,
    Response,
    Conversation,
    File,
    Upload,
    Batch,
    FineTuningJob,
    VectorStore,
    Video,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ChatCompletion => "chat.completion",
            Kind::Response => "response",
            Kind::Conversation => "conversation",
            Kind::File => "file",
            Kind::Upload => "upload",
            Kind::Batch => "batch",
            Kind::FineTuningJob => "fine_tuning.job",
            Kind::VectorStore => "vector_store",
            Kind::Video => "video",
        }
    }
}

/// What a route does with stored objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objects {
    /// Nothing stored (audio, image edits, token counts).
    NotOwned,
    /// Creates one; the answer's `id` is recorded with the caller's key and end user.
    Creates(Kind),
    /// Lists them; the answer's `data` keeps only the caller's.
    Lists(Kind),
    /// Acts on the one named by the path's first `{}` segment: another key's is a 404.
    Owned(Kind),
}

#[derive(Debug)]
pub struct Route {
    pub method: Verb,
    /// `/v1/files/{id}/content`: a `{…}` segment matches one non-empty path segment.
    pub pattern: &'static str,
    /// For `allowed_endpoints`, key scopes, metrics and events.
    pub label: &'static str,
    pub body: BodyKind,
    pub checks: Checks,
    pub objects: Objects,
    /// Largest body accepted (413 above it); `0` means `[server] max_body_bytes`.
    pub max_bytes: u64,
    /// Body fields naming files (or lists of files) that must be the caller's own.
    pub file_refs: &'static [&'static str],
}

impl Route {
    /// The path's segment under the pattern's first `{…}`, if it matches at all.
    fn capture<'p>(&self, path: &'p str) -> Option<Option<&'p str>> {
        let mut first = None;
        let mut given = path.split('/');
        for want in self.pattern.split('/') {
            let seg = given.next()?;
            if want.starts_with('{') {
                if seg.is_empty() {
                    return None;
                }
                first = first.or(Some(seg));
            } else if want != seg {
                return None;
            }
        }
        given.next().is_none().then_some(first)
    }

    /// The object id the path names (`/v1/files/{id}` → the id), if the route has one.
    pub fn object_id<'p>(&self, path: &'p str) -> Option<&'p str> {
        let path = path.split('?').next().unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        self.capture(path).flatten()
    }

    /// The body cap, `server_max` standing in for JSON routes.
    pub fn body_cap(&self, server_max: usize) -> u64 {
        if self.max_bytes == 0 {
            server_max as u64
        } else {
            self.max_bytes
        }
    }
}

/// What the table makes of a request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(RouteId),
    /// The path is a route, the method is not.
    WrongMethod,
    Unknown,
}

/// Finds the route for a request line (path without its query, no trailing slash).
pub fn lookup(method: &Method, path: &str) -> Lookup {
    let mut path_known = false;
    for (i, route) in table::ROUTES.iter().enumerate() {
        if route.capture(path).is_some() {
            if route.method.matches(method) {
                return Lookup::Found(RouteId(i as u16));
            }
            path_known = true;
        }
    }
    if path_known {
        Lookup::WrongMethod
    } else {
        Lookup::Unknown
    }
}

/// Every route's label, for validating `allowed_endpoints` and key scopes.
pub fn labels() -> impl Iterator<Item = &'static str> {
    table::ROUTES.iter().map(|r| r.label)
}

/// The route labelled `label`.
pub fn by_label(label: &str) -> Option<RouteId> {
    table::ROUTES
        .iter()
        .position(|r| r.label == label)
        .map(|i| RouteId(i as u16))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn patterns_capture_their_first_id() {
        let Lookup::Found(id) = lookup(&Method::GET, "/v1/files/file-abc/content") else {
            unreachable!("files.content is a route")
        };
        assert_eq!(id.route().label, "files.content");
        assert_eq!(
            id.route().object_id("/v1/files/file-abc/content?x=1"),
            Some("file-abc")
        );
        assert_eq!(
            lookup(&Method::PUT, "/v1/files/file-abc"),
            Lookup::WrongMethod
        );
        assert_eq!(lookup(&Method::GET, "/v1/files//content"), Lookup::Unknown);
        assert_eq!(lookup(&Method::GET, "/v1/assistants"), Lookup::Unknown);
        let Lookup::Found(list) = lookup(&Method::GET, "/v1/chat/completions") else {
            unreachable!("the stored-completions list is a route")
        };
        assert_eq!(list.route().label, "chat.completions.list");
    }

    #[test]
    fn labels_are_unique_and_patterns_start_at_v1() {
        let mut seen = std::collections::HashSet::new();
        for route in table::ROUTES {
            assert!(seen.insert(route.label), "duplicate label {}", route.label);
            assert!(route.pattern.starts_with("/v1/"), "{}", route.pattern);
        }
        assert!(table::ROUTES.len() < usize::from(u16::MAX));
    }
}

/// `docs/routes.md`'s table, rendered from the table itself so the two cannot drift.
#[cfg(test)]
mod docs_table {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn size(bytes: u64) -> String {
        if bytes == 0 {
            "`max_body_bytes`".into()
        } else {
            format!("{} MB", bytes / (1024 * 1024))
        }
    }

    fn render() -> String {
        let mut out = String::from(
            "| Method | Path | Label | Body | Content checks | Objects |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for route in table::ROUTES {
            let body = match (route.body, route.checks) {
                (BodyKind::NoBody, _) => "none".to_owned(),
                (BodyKind::Json, _) => format!("JSON, ≤ {}", size(route.max_bytes)),
                (BodyKind::Multipart, Checks::Nothing | Checks::Answer) => {
                    format!("multipart, streamed, ≤ {}", size(route.max_bytes))
                }
                (BodyKind::Multipart, _) => {
                    format!("multipart, read and rebuilt, ≤ {}", size(route.max_bytes))
                }
                (BodyKind::MultipartOrJson, _) => {
                    format!("JSON or multipart, read, ≤ {}", size(route.max_bytes))
                }
            };
            let checks = match route.checks {
                Checks::Nothing => "—".to_owned(),
                Checks::Text(fields) => format!(
                    "filters + moderation on {}",
                    fields
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Checks::Items => "filters + moderation on `items`".into(),
                Checks::UploadedFile => "batch / fine-tune content, line by line".into(),
                Checks::Answer => "— (output checks not yet)".into(),
            };
            let mut objects = match route.objects {
                Objects::NotOwned => "—".to_owned(),
                Objects::Creates(kind) => format!("creates a `{}`", kind.as_str()),
                Objects::Lists(kind) => format!("lists `{}`, caller's only", kind.as_str()),
                Objects::Owned(kind) => format!("caller's `{}` only", kind.as_str()),
            };
            for field in route.file_refs {
                objects.push_str(&format!("; `{field}`: caller's files only"));
            }
            out.push_str(&format!(
                "| {} | `{}` | `{}` | {body} | {checks} | {objects} |\n",
                route.method.as_str(),
                route.pattern,
                route.label
            ));
        }
        out
    }

    #[test]
    fn docs_routes_md_lists_every_route() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/routes.md");
        let table = render();
        if std::env::var_os("WARDEN_WRITE_ROUTES_TABLE").is_some() {
            std::fs::write("/tmp/routes_table.md", &table).unwrap();
            return;
        }
        let doc = std::fs::read_to_string(path).unwrap();
        assert!(
            doc.contains(&table),
            "docs/routes.md is out of step with routes::table; regenerate with WARDEN_WRITE_ROUTES_TABLE=1"
        );
    }
}
