//! The page's files, embedded in the binary: no build step, no toolchain besides cargo.

const INDEX: &str = include_str!("../assets/index.html");
const REFUSED: &str = include_str!("../assets/refused.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const ICON: &str = include_str!("../assets/icon.svg");

/// The page, with the session's CSRF token in its `<meta name="fedhub-csrf">`.
pub fn index(csrf: &str) -> String {
    INDEX.replace("{{csrf}}", csrf)
}

/// The page shown to a browser without a session.
pub fn refused(message: &str) -> String {
    REFUSED.replace("{{message}}", &escape(message))
}

/// A static file by name: its content type and content.
pub fn file(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Some(("text/css; charset=utf-8", APP_CSS)),
        "icon.svg" => Some(("image/svg+xml", ICON)),
        _ => None,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_and_carries_the_csrf_token() {
        let page = index("CSRF-TOKEN");
        assert!(page.contains(r#"<meta name="fedhub-csrf" content="CSRF-TOKEN">"#));
        assert!(page.contains(r#"<script src="/assets/app.js" defer></script>"#));
        assert_eq!(page.matches("<script").count(), 1, "no inline script");
        assert!(refused("<b>").contains("&lt;b&gt;"));
    }
}
