//! Recognises an upstream error that targets one end user: OpenAI refusing a request
//! because of the `safety_identifier` it carried. Such a user is suspended in Warden at
//! once, before more of their requests reach OpenAI.

/// The error's `code` (or `"refused"`) when an upstream 4xx error body names this
/// request's safety identifier — in its message, `param` or `code`.
pub fn targets_identifier(status: u16, body: &[u8], safety_identifier: &str) -> Option<String> {
    if !(400..500).contains(&status) || status == 429 || safety_identifier.is_empty() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let field = |name: &str| error.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let named = field("message").contains(safety_identifier)
        || field("param") == "safety_identifier"
        || field("code").contains("safety_identifier");
    named.then(|| match field("code") {
        "" => "refused".to_owned(),
        code => code.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_that_name_the_user_count() {
        let sid = "wsi1_abc";
        let named = br#"{"error":{"message":"Access for safety_identifier wsi1_abc is deactivated.","type":"invalid_request_error","param":null,"code":"user_deactivated"}}"#;
        assert_eq!(
            targets_identifier(403, named, sid).as_deref(),
            Some("user_deactivated")
        );
        let by_param = br#"{"error":{"message":"Blocked.","type":"invalid_request_error","param":"safety_identifier","code":null}}"#;
        assert_eq!(
            targets_identifier(400, by_param, sid).as_deref(),
            Some("refused")
        );
        let other = br#"{"error":{"message":"Bad model.","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#;
        assert_eq!(targets_identifier(404, other, sid), None);
        assert_eq!(targets_identifier(500, named, sid), None);
        assert_eq!(targets_identifier(429, named, sid), None);
        assert_eq!(targets_identifier(403, b"not json", sid), None);
    }
}
