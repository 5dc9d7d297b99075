//! Path templates: matching a request path to a route and naming its major parameter.

/// One segment of a compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// A compiled template such as `/channels/{channel_id}/messages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    segments: Vec<Segment>,
    literals: usize,
}

impl Template {
    pub(crate) fn parse(template: &str) -> Self {
        let segments: Vec<Segment> = split(template)
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    Segment::Param
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        let literals = segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        Self { segments, literals }
    }

    /// `Some(specificity)` when `path` matches.
    pub(crate) fn matches(&self, path: &str) -> Option<usize> {
        let mut parts = split(path);
        for seg in &self.segments {
            let part = parts.next()?;
            if let Segment::Literal(l) = seg {
                if l != part {
                    return None;
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(self.literals)
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// The major parameter of a concrete path, as Discord keys limits (A.2): `channels/{id}`, `guilds/{id}`,
/// `webhooks/{id}/{token}` or `webhooks/{id}`, `interactions/{id}/{token}`; empty when there is none.
pub(crate) fn major_of(path: &str) -> String {
    let parts: Vec<&str> = split(path).collect();
    match parts.as_slice() {
        ["channels", id, ..] | ["guilds", id, ..] => format!("{}/{}", parts[0], id),
        ["webhooks", id, token, ..] if !is_keyword(token) => format!("webhooks/{id}/{token}"),
        ["webhooks", id, ..] => format!("webhooks/{id}"),
        ["interactions", id, token, ..] => format!("interactions/{id}/{token}"),
        _ => String::new(),
    }
}

/// Words that follow a webhook id without being a token (`/webhooks/{id}/messages` does not exist, but a
/// numeric id never equals these).
fn is_keyword(s: &str) -> bool {
    matches!(s, "slack" | "github")
}

/// Whether a template is an interaction callback/follow-up or a webhook with its token in the path: these
/// are exempt from the global limit and need no `Authorization` (A.6).
pub(crate) fn is_interaction_or_webhook_token(template: &str) -> bool {
    let parts: Vec<&str> = split(template).collect();
    matches!(
        parts.as_slice(),
        ["interactions", ..] | ["webhooks", _, _, ..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_prefers_literals_and_checks_length() {
        let t = Template::parse("/channels/{c}/messages/{m}");
        let b = Template::parse("/channels/{c}/messages/bulk-delete");
        assert_eq!(t.matches("/channels/1/messages/2"), Some(2));
        assert_eq!(b.matches("/channels/1/messages/bulk-delete"), Some(3));
        assert_eq!(t.matches("/channels/1/messages"), None);
        assert_eq!(t.matches("/channels/1/messages/2/reactions"), None);
    }

    #[test]
    fn majors() {
        assert_eq!(major_of("/channels/10/messages"), "channels/10");
        assert_eq!(major_of("/guilds/5/members/1/roles/2"), "guilds/5");
        assert_eq!(major_of("/webhooks/1/tok"), "webhooks/1/tok");
        assert_eq!(major_of("/webhooks/1"), "webhooks/1");
        assert_eq!(
            major_of("/interactions/1/tok/callback"),
            "interactions/1/tok"
        );
        assert_eq!(major_of("/users/@me"), "");
        assert!(is_interaction_or_webhook_token("/webhooks/{id}/{token}"));
        assert!(!is_interaction_or_webhook_token("/webhooks/{id}"));
        assert!(is_interaction_or_webhook_token(
            "/interactions/{id}/{token}/callback"
        ));
    }
}
