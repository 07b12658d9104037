//! OpenAI's Admin API (projects, service accounts, project API keys) and the Usage and
//! Costs APIs under `/v1/organization`, answered from the stand-in's organization
//! (`org.rs`): usage is what the stand-in really served on each key, plus any outside
//! traffic added through the control API.

use std::collections::BTreeMap;

use axum::response::Response;
use http::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::errors::{parse, ApiError};
use crate::org::{ApiKey, Counts, Org, UsageKind};
use crate::routes::json;
use crate::text;

/// Routes one `/v1/organization/…` call (`route` is the path after `/v1`).
pub(crate) fn handle(
    org: &Org,
    method: &Method,
    route: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let query = Query::parse(query.unwrap_or(""));
    let parts: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    let path = format!("/v1{route}");
    match (method, parts.as_slice()) {
        (&Method::GET, ["organization", "projects"]) => projects(org, &query),
        (&Method::GET, ["organization", "projects", p, "api_keys"]) => api_keys(org, p, &query),
        (&Method::DELETE, ["organization", "projects", p, "api_keys", id]) => {
            delete_key(org, p, id)
        }
        (&Method::GET, ["organization", "projects", p, "service_accounts"]) => {
            service_accounts(org, p, &query)
        }
        (&Method::POST, ["organization", "projects", p, "service_accounts"]) => {
            create_service_account(org, p, body)
        }
        (&Method::DELETE, ["organization", "projects", p, "service_accounts", id]) => {
            delete_service_account(org, p, id)
        }
        (&Method::GET, ["organization", "usage", kind]) => match UsageKind::parse(kind) {
            Some(kind) => usage(org, kind, &query),
            None => Err(ApiError::invalid_url(method, &path)),
        },
        (&Method::GET, ["organization", "costs"]) => costs(org, &query),
        (_, ["organization", "projects"])
        | (_, ["organization", "projects", _, "api_keys" | "service_accounts"])
        | (_, ["organization", "projects", _, "api_keys" | "service_accounts", _])
        | (_, ["organization", "usage", _])
        | (_, ["organization", "costs"]) => Err(ApiError::invalid_method(method, &path)),
        _ => Err(ApiError::invalid_url(method, &path)),
    }
}

/// `a=1&b=x,y&b=z`, percent-decoded; repeated names (and `name[]`) collect.
struct Query(BTreeMap<String, Vec<String>>);

impl Query {
    fn parse(text: &str) -> Query {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).trim_end_matches("[]").to_owned();
            map.entry(name).or_default().push(decode(value));
        }
        Query(map)
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every value, commas split.
    fn list(&self, name: &str) -> Vec<String> {
        self.0
            .get(name)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn int(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.one(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::invalid_request(format!(
                        "Invalid '{name}': expected an integer, got '{v}'."
                    ))
                    .param(name)
                })
            })
            .transpose()
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An Admin API list page of `items` (already in order) after the `after` cursor.
fn list_page(items: Vec<(String, Value)>, query: &Query) -> Result<Response, ApiError> {
    let limit = query.int("limit")?.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_request(format!(
            "Invalid 'limit': must be between 1 and 100, got {limit}."
        ))
        .param("limit"));
    }
    let start = match query.one("after") {
        Some(after) => match items.iter().position(|(id, _)| id == after) {
            Some(i) => i + 1,
            None => return Err(ApiError::no_such("object", after).param("after")),
        },
        None => 0,
    };
    let page: Vec<&(String, Value)> = items.iter().skip(start).take(limit as usize).collect();
    let has_more = start + page.len() < items.len();
    Ok(json(&json!({
        "object": "list",
        "data": page.iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "first_id": page.first().map(|(id, _)| id),
        "last_id": page.last().map(|(id, _)| id),
        "has_more": has_more,
    })))
}

fn project_known(org: &Org, project: &str) -> Result<(), ApiError> {
    let known = org
        .state
        .lock()
        .is_ok_and(|s| s.projects.iter().any(|p| p.id == project));
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found(
            format!("No such project: {project}"),
            "project_not_found",
        ))
    }
}

fn projects(org: &Org, query: &Query) -> Result<Response, ApiError> {
    let items = org.state.lock().map_or_else(
        |_| Vec::new(),
        |s| {
            s.projects
                .iter()
                .map(|p| {
                    (
                        p.id.clone(),
                        json!({"id": p.id, "object": "organization.project",
                        "name": p.name, "created_at": p.created_at, "archived_at": null,
                        "status": "active"}),
                    )
                })
                .collect()
        },
    );
    list_page(items, query)
}

fn key_object(key: &ApiKey, accounts: &[crate::org::ServiceAccount]) -> Value {
    let owner = match &key.service_account {
        Some(id) => {
            let sa = accounts.iter().find(|a| &a.id == id);
            json!({"type": "service_account", "service_account": {
                "object": "organization.project.service_account", "id": id,
                "name": sa.map(|a| a.name.as_str()), "role": "member",
                "created_at": sa.map(|a| a.created_at)}})
        }
        None => json!({"type": "user", "user": {"object": "organization.project.user",
            "id": "user_standin", "name": "Stand-in User", "email": "user@example.com",
            "role": "owner", "added_at": key.created_at}}),
    };
    json!({"object": "organization.project.api_key", "id": key.id,
        "name": key.name, "redacted_value": key.redacted(), "created_at": key.created_at,
        "last_used_at": key.last_used_at, "owner": owner})
}

fn api_keys(org: &Org, project: &str, query: &Query) -> Result<Response, ApiError> {
    project_known(org, project)?;
    let items = org.state.lock().map_or_else(
        |_| Vec::new(),
        |s| {
            s.keys
                .iter()
                .filter(|k| k.project == project)
                .map(|k| (k.id.clone(), key_object(k, &s.service_accounts)))
                .collect()
        },
    );
    list_page(items, query)
}

fn delete_key(org: &Org, project: &str, id: &str) -> Result<Response, ApiError> {
    project_known(org, project)?;
    let mut state = org.state.lock().map_err(|_| ApiError::for_status(500))?;
    let before = state.keys.len();
    state.keys.retain(|k| !(k.id == id && k.project == project));
    if state.keys.len() == before {
        return Err(ApiError::not_found(
            format!("No such API key: {id}"),
            "api_key_not_found",
        ));
    }
    Ok(json(
        &json!({"object": "organization.project.api_key.deleted", "id": id, "deleted": true}),
    ))
}

fn service_accounts(org: &Org, project: &str, query: &Query) -> Result<Response, ApiError> {
    project_known(org, project)?;
    let items = org.state.lock().map_or_else(
        |_| Vec::new(),
        |s| {
            s.service_accounts
                .iter()
                .filter(|a| a.project == project)
                .map(|a| {
                    (
                        a.id.clone(),
                        json!({"object": "organization.project.service_account",
                        "id": a.id, "name": a.name, "role": "member", "created_at": a.created_at}),
                    )
                })
                .collect()
        },
    );
    list_page(items, query)
}

#[derive(Deserialize)]
struct NewServiceAccount {
    name: Option<String>,
}

fn create_service_account(org: &Org, project: &str, body: &[u8]) -> Result<Response, ApiError> {
    project_known(org, project)?;
    let request: NewServiceAccount = parse(body)?;
    let name = request.name.ok_or_else(|| ApiError::missing("name"))?;
    let value = format!("sk-svcacct-{}", text::id("").trim_start_matches('_'));
    let key_id = org.add_key(project, &name, &value, false);
    let state = org.state.lock().map_err(|_| ApiError::for_status(500))?;
    let key = state.keys.iter().find(|k| k.id == key_id);
    let (Some(key), Some(sa_id)) = (key, key.and_then(|k| k.service_account.clone())) else {
        return Err(ApiError::for_status(500));
    };
    Ok(json(&json!({
        "object": "organization.project.service_account", "id": sa_id, "name": name,
        "role": "member", "created_at": key.created_at,
        "api_key": {"object": "organization.project.service_account.api_key",
            "value": key.value, "name": "Secret Key", "created_at": key.created_at, "id": key.id},
    })))
}

fn delete_service_account(org: &Org, project: &str, id: &str) -> Result<Response, ApiError> {
    project_known(org, project)?;
    let mut state = org.state.lock().map_err(|_| ApiError::for_status(500))?;
    let before = state.service_accounts.len();
    state
        .service_accounts
        .retain(|a| !(a.id == id && a.project == project));
    if state.service_accounts.len() == before {
        return Err(ApiError::not_found(
            format!("No such service account: {id}"),
            "service_account_not_found",
        ));
    }
    // Its key goes with it.
    state
        .keys
        .retain(|k| k.service_account.as_deref() != Some(id));
    Ok(json(
        &json!({"object": "organization.project.service_account.deleted", "id": id, "deleted": true}),
    ))
}

/// (bucket seconds, default and maximum buckets per page), as OpenAI documents them.
fn width(query: &Query, allowed: &[&str]) -> Result<(u64, u64, u64), ApiError> {
    let text = query.one("bucket_width").unwrap_or("1d");
    let width = match text {
        "1m" => (60, 60, 1440),
        "1h" => (3600, 24, 168),
        "1d" => (86_400, 7, 31),
        _ => (0, 0, 0),
    };
    if width.0 == 0 || !allowed.contains(&text) {
        return Err(ApiError::invalid_request(format!(
            "Invalid 'bucket_width': expected one of {}, got '{text}'.",
            allowed.join(", ")
        ))
        .param("bucket_width"));
    }
    Ok(width)
}

/// The buckets of this page: `[from, end)` from the cursor on, at most `limit` of them.
fn window(
    query: &Query,
    (width, default, max): (u64, u64, u64),
) -> Result<(Vec<u64>, Option<String>), ApiError> {
    let start = query
        .int("start_time")?
        .ok_or_else(|| ApiError::missing("start_time"))?;
    let end = query.int("end_time")?;
    if end.is_some_and(|end| end <= start) {
        return Err(
            ApiError::invalid_request("Invalid 'end_time': must be after start_time.")
                .param("end_time"),
        );
    }
    let limit = query.int("limit")?.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid_request(format!(
            "Invalid 'limit': must be between 1 and {max} for this bucket_width, got {limit}."
        ))
        .param("limit"));
    }
    let from = match query.one("page") {
        Some(page) => page
            .strip_prefix("page_")
            .and_then(|p| p.strip_suffix('='))
            .and_then(|p| u64::from_str_radix(p, 16).ok())
            .filter(|p| *p >= start)
            .ok_or_else(|| {
                ApiError::invalid_request(format!("Invalid 'page': '{page}'.")).param("page")
            })?,
        None => start - start % width,
    };
    let end = end.unwrap_or_else(|| from + width * limit);
    let mut starts = Vec::new();
    let mut at = from;
    while at < end && (starts.len() as u64) < limit {
        starts.push(at);
        at += width;
    }
    let next = (at < end).then(|| format!("page_{at:x}="));
    Ok((starts, next))
}

fn page(buckets: Vec<Value>, next: Option<String>) -> Response {
    json(&json!({"object": "page", "data": buckets, "has_more": next.is_some(), "next_page": next}))
}

fn usage(org: &Org, kind: UsageKind, query: &Query) -> Result<Response, ApiError> {
    let width = width(query, &["1m", "1h", "1d"])?;
    let (starts, next) = window(query, width)?;
    let group_by = query.list("group_by");
    for g in &group_by {
        if !matches!(
            g.as_str(),
            "project_id" | "user_id" | "api_key_id" | "model" | "batch"
        ) {
            return Err(
                ApiError::invalid_request(format!("Invalid 'group_by': '{g}'.")).param("group_by"),
            );
        }
    }
    let by_key = group_by.iter().any(|g| g == "api_key_id");
    let by_project = group_by.iter().any(|g| g == "project_id");
    let (keys, projects) = (query.list("api_key_ids"), query.list("project_ids"));
    let state = org.state.lock().map_err(|_| ApiError::for_status(500))?;
    let object = match kind {
        UsageKind::Completions => "organization.usage.completions.result",
        UsageKind::Embeddings => "organization.usage.embeddings.result",
        UsageKind::Images => "organization.usage.images.result",
    };
    let buckets = starts
        .iter()
        .map(|&from| {
            let to = from + width.0;
            let mut groups: BTreeMap<(Option<&str>, Option<&str>), Counts> = BTreeMap::new();
            for ((key, project, minute, k), counts) in &state.usage {
                let wanted = *k == kind
                    && (from..to).contains(minute)
                    && (keys.is_empty() || keys.contains(key))
                    && (projects.is_empty() || projects.contains(project));
                if wanted {
                    let group = groups
                        .entry((
                            by_key.then_some(key.as_str()),
                            by_project.then_some(project.as_str()),
                        ))
                        .or_default();
                    group.requests += counts.requests;
                    group.input_tokens += counts.input_tokens;
                    group.output_tokens += counts.output_tokens;
                }
            }
            let results: Vec<Value> = groups
                .iter()
                .map(|((key, project), c)| {
                    let mut r = json!({"object": object, "input_tokens": c.input_tokens,
                        "num_model_requests": c.requests, "project_id": project,
                        "user_id": null, "api_key_id": key, "model": null});
                    if kind == UsageKind::Images {
                        r["images"] = json!(c.output_tokens);
                        r["input_tokens"] = json!(0);
                        r["source"] = Value::Null;
                        r["size"] = Value::Null;
                    }
                    if kind == UsageKind::Completions {
                        r["output_tokens"] = json!(c.output_tokens);
                        r["input_cached_tokens"] = json!(0);
                        r["input_audio_tokens"] = json!(0);
                        r["output_audio_tokens"] = json!(0);
                        r["batch"] = Value::Null;
                    }
                    r
                })
                .collect();
            json!({"object": "bucket", "start_time": from, "end_time": to, "results": results})
        })
        .collect();
    Ok(page(buckets, next))
}

fn costs(org: &Org, query: &Query) -> Result<Response, ApiError> {
    let width = width(query, &["1d"])?;
    let width = (width.0, width.1, 180);
    let (starts, next) = window(query, width)?;
    let by_project = query.list("group_by").iter().any(|g| g == "project_id");
    let state = org.state.lock().map_err(|_| ApiError::for_status(500))?;
    let buckets = starts
        .iter()
        .map(|&from| {
            let mut groups: BTreeMap<Option<&str>, f64> = BTreeMap::new();
            for ((project, day), usd) in &state.costs {
                if *day == from {
                    *groups.entry(by_project.then_some(project.as_str())).or_default() += usd;
                }
            }
            let results: Vec<Value> = groups
                .iter()
                .map(|(project, usd)| json!({"object": "organization.costs.result",
                    "amount": {"value": usd, "currency": "usd"}, "line_item": null,
                    "project_id": project}))
                .collect();
            json!({"object": "bucket", "start_time": from, "end_time": from + width.0, "results": results})
        })
        .collect();
    Ok(page(buckets, next))
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_percent_escapes_and_keeps_bad_ones() {
        assert_eq!(decode("page_1f%3D"), "page_1f=");
        assert_eq!(decode("a%2Cb"), "a,b");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
