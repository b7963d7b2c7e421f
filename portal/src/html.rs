//! HTML: escaping and the one page layout. Pages are plain strings built from escaped
//! parts; nothing from a request is written without [`esc`].

use std::fmt::Write;

use crate::i18n::{Lang, t};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Who is looking, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Not signed in.
    None,
    /// Signed in with the password only (set-up pages).
    Limited,
    /// Signed in.
    Full { admin: bool },
}

/// Everything the layout needs besides the body.
pub struct Layout<'a> {
    pub lang: Lang,
    /// The site's name (configured, or the built-in one).
    pub site: &'a str,
    pub title: &'a str,
    pub user: Option<&'a str>,
    pub nav: Nav,
    pub csrf: &'a str,
    /// The current path, for the language links.
    pub path: &'a str,
    pub notice: Option<&'a str>,
}

/// A hidden CSRF field.
pub fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

/// A form that posts to `action` with one button (and hidden fields).
pub fn button_form(
    action: &str,
    csrf: &str,
    hidden: &[(&str, &str)],
    label: &str,
    class: &str,
) -> String {
    let mut fields = csrf_field(csrf);
    for (k, v) in hidden {
        let _ = write!(
            fields,
            r#"<input type="hidden" name="{}" value="{}">"#,
            esc(k),
            esc(v)
        );
    }
    format!(
        r#"<form method="post" action="{}" class="inline">{fields}<button type="submit" class="{}">{}</button></form>"#,
        esc(action),
        esc(class),
        esc(label)
    )
}

/// A form that posts one code field to `action`, with its label and button.
pub fn code_form(action: &str, csrf: &str, label: &str, button_id: &str, button: &str) -> String {
    format!(
        r#"<form method="post" action="{action}">{csrf}
<label for="code">{label}</label><input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="12" required>
<button type="submit" id="{button_id}">{button}</button></form>"#,
        action = esc(action),
        csrf = csrf_field(csrf),
        label = esc(label),
        button_id = esc(button_id),
        button = esc(button),
    )
}

/// The whole page.
pub fn page(l: &Layout<'_>, body: &str) -> String {
    let lang = l.lang;
    let mut nav = String::new();
    let link = |nav: &mut String, href: &str, key: &str| {
        let _ = write!(nav, r#"<a href="{href}">{}</a>"#, esc(t(lang, key)));
    };
    match l.nav {
        Nav::None => {}
        Nav::Limited => link(&mut nav, "/", "nav.home"),
        Nav::Full { admin } => {
            link(&mut nav, "/", "nav.home");
            link(&mut nav, "/address", "nav.address");
            link(&mut nav, "/app", "nav.app");
            link(&mut nav, "/trusted", "nav.trusted");
            if admin {
                link(&mut nav, "/admin", "nav.admin");
            }
        }
    }
    if l.nav != Nav::None {
        nav.push_str(&button_form(
            "/logout",
            l.csrf,
            &[],
            t(lang, "nav.logout"),
            "link",
        ));
    }
    let user = l
        .user
        .map(|u| format!(r#"<span class="who">{}</span>"#, esc(u)))
        .unwrap_or_default();
    let notice = l
        .notice
        .map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n)))
        .unwrap_or_default();
    let back = esc(&url_component(l.path));
    format!(
        r#"<!DOCTYPE html>
<html lang="{code}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — {site}</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<header><strong class="site">{site}</strong>{user}<nav>{nav}</nav></header>
<main>
<h1>{title}</h1>
{notice}{body}
</main>
<footer><a href="/lang/en?back={back}" lang="en">English</a> | <a href="/lang/ja?back={back}" lang="ja">日本語</a></footer>
</body>
</html>
"#,
        code = lang.code(),
        title = esc(l.title),
        site = esc(l.site),
    )
}

/// Percent-encodes a value for a query string.
pub fn url_component(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The style sheet.
pub const STYLE: &str = r#"
body { font-family: system-ui, "Hiragino Sans", "Noto Sans CJK JP", sans-serif; margin: 0; color: #1d1d1f; background: #f5f6f8; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 1em; padding: .8em 1.5em; background: #17365d; color: #fff; }
header a, header button.link { color: #fff; }
header nav { display: flex; gap: 1em; align-items: center; margin-left: auto; }
.site { font-size: 1.1em; }
.who { opacity: .85; }
main { max-width: 42em; margin: 1.5em auto; background: #fff; padding: 1.5em 2em; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
h1 { font-size: 1.4em; margin-top: 0; }
label { display: block; margin: .8em 0 .2em; font-weight: 600; }
label.check { font-weight: normal; }
input[type=text], input[type=password], input[type=email] { width: 100%; box-sizing: border-box; padding: .5em; font-size: 1em; border: 1px solid #aab; border-radius: 4px; }
button { margin-top: 1em; padding: .5em 1.2em; font-size: 1em; border-radius: 4px; border: 1px solid #17365d; background: #17365d; color: #fff; cursor: pointer; }
button.secondary { background: #fff; color: #17365d; }
button.link { background: none; border: none; padding: 0; margin: 0; text-decoration: underline; cursor: pointer; font-size: 1em; }
form.inline { display: inline; }
.notice { background: #e7f3e7; border-left: 4px solid #2e7d32; padding: .6em 1em; }
.error { background: #fdecea; border-left: 4px solid #c62828; padding: .6em 1em; }
.warning { background: #fff4e5; border-left: 4px solid #ef6c00; padding: .6em 1em; }
.secret { font-family: ui-monospace, monospace; font-size: 1.1em; letter-spacing: .08em; word-break: break-all; }
.qr svg { width: 220px; height: 220px; }
table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; padding: .4em; border-bottom: 1px solid #dde; }
.otp { font-family: ui-monospace, monospace; font-size: 2em; letter-spacing: .2em; }
section { margin-top: 1.5em; padding-top: .5em; border-top: 1px solid #eee; }
footer { text-align: center; margin: 2em; color: #555; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
