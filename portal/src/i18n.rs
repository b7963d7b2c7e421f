//! English and Japanese: a small message catalogue and Accept-Language negotiation.
//! The language chosen with the footer's links is kept in a cookie and wins.

use axum::http::{HeaderMap, header};

/// A language the portal speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ja,
}

impl Lang {
    /// From a tag such as `ja`, `ja-JP`, `en-GB`.
    pub fn from_code(tag: &str) -> Option<Lang> {
        let primary = tag.split(['-', '_']).next()?.trim().to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        }
    }

    /// The tag for `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }
}

/// The best language for an `Accept-Language` header (highest q first), English when
/// none of ours is asked for.
pub fn negotiate(headers: &HeaderMap) -> Lang {
    let Some(value) = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Lang::En;
    };
    let mut best: Option<(u16, Lang)> = None;
    for part in value.split(',').take(20) {
        let mut pieces = part.split(';');
        let tag = pieces.next().unwrap_or("").trim();
        let q = pieces
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        // q in thousandths; NaN and out-of-range values count as 0.
        let q = if (0.0..=1.0).contains(&q) {
            (q * 1000.0) as u16
        } else {
            0
        };
        if let Some(lang) = Lang::from_code(tag) {
            if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
    }
    best.map_or(Lang::En, |(_, l)| l)
}

/// The texts an operator configures (`[portal] site_name`, `helpdesk_contact`).
#[derive(Debug, Clone, Default)]
pub struct SiteTexts {
    pub name: Option<otpgate_config::LocalizedText>,
    pub helpdesk: Option<otpgate_config::LocalizedText>,
}

fn pick(text: &otpgate_config::LocalizedText, lang: Lang) -> &str {
    match lang {
        Lang::En => &text.en,
        Lang::Ja => &text.ja,
    }
}

impl SiteTexts {
    /// The site's name: the configured one, else the built-in.
    pub fn name(&self, lang: Lang) -> &str {
        self.name
            .as_ref()
            .map_or(t(lang, "site"), |n| pick(n, lang))
    }

    /// The helpdesk contact, when configured.
    pub fn helpdesk(&self, lang: Lang) -> Option<&str> {
        self.helpdesk.as_ref().map(|h| pick(h, lang))
    }
}

/// The text of `key` in `lang` (the key itself if the catalogue lacks it, which a unit
/// test rules out for the keys the pages use).
pub fn t(lang: Lang, key: &str) -> &'static str {
    match CATALOGUE.iter().find(|(k, _, _)| *k == key) {
        Some((_, en, ja)) => match lang {
            Lang::En => en,
            Lang::Ja => ja,
        },
        None => {
            tracing::warn!(key, "portal: message missing from the catalogue");
            "?"
        }
    }
}

/// (key, English, Japanese).
const CATALOGUE: &[(&str, &str, &str)] = &[
    ("site", "Multi-factor authentication", "多要素認証"),
    ("nav.home", "Home", "ホーム"),
    ("nav.address", "Notification address", "通知用アドレス"),
    ("nav.app", "Authenticator app", "認証アプリ"),
    ("nav.trusted", "Trusted browsers", "信頼済みブラウザ"),
    ("nav.admin", "Helpdesk", "ヘルプデスク"),
    ("nav.logout", "Sign out", "ログアウト"),
    ("back.home", "Back to the start page", "トップページへ戻る"),
    ("login.title", "Sign in", "ログイン"),
    ("login.user", "ID", "ID"),
    ("login.password", "Password", "パスワード"),
    ("login.next", "Next", "次へ"),
    (
        "login.failed",
        "The ID or the password is wrong.",
        "ID またはパスワードが違います。",
    ),
    (
        "login.ended",
        "A second factor was set up for this account elsewhere. Please sign in again.",
        "このアカウントには別の場所で二要素目が設定されました。もう一度ログインしてください。",
    ),
    (
        "logout.done",
        "You have signed out.",
        "ログアウトしました。",
    ),
    ("code.title", "One-time password", "ワンタイムパスワード"),
    (
        "code.label",
        "Code from your authenticator app (6 digits) or a mailed code (8 digits)",
        "認証アプリのコード（6桁）またはメールで届いたコード（8桁）",
    ),
    (
        "code.trust",
        "Trust this browser for 7 days",
        "このブラウザを7日間信頼する",
    ),
    ("code.signin", "Sign in", "ログイン"),
    ("code.cancel", "Cancel", "キャンセル"),
    ("help.title", "Can't log in?", "ログインできない場合"),
    (
        "help.text",
        "We can mail a one-time code to your notification address. If you have none, your request goes to the helpdesk.",
        "通知用アドレスにワンタイムコードをお送りします。通知用アドレスが未登録の場合は、ヘルプデスクに依頼が届きます。",
    ),
    ("help.button", "Mail me a code", "コードをメールで受け取る"),
    (
        "help.mailed",
        "A one-time code was sent to {address}. Enter it above.",
        "{address} にワンタイムコードを送信しました。上の欄に入力してください。",
    ),
    (
        "helpdesk.title",
        "Request sent to the helpdesk",
        "ヘルプデスクに依頼しました",
    ),
    (
        "helpdesk.queued",
        "You have no notification address, so your request was sent to the helpdesk.",
        "通知用アドレスが登録されていないため、依頼をヘルプデスクに送りました。",
    ),
    (
        "helpdesk.next",
        "Call the helpdesk. After checking who you are, they will read you an 8-digit code: enter it here. After signing in, register a notification address so that you can help yourself next time.",
        "ヘルプデスクに電話してください。本人確認の後、8桁のコードを伝えられますので、ここに入力してください。ログイン後、次回から自分で対処できるよう通知用アドレスを登録してください。",
    ),
    ("lost.title", "Lost your device?", "端末を紛失した場合"),
    (
        "lost.text",
        "Reset the app: a link valid for 24 hours is mailed to your notification address. Following it (with your password) removes the app and your trusted browsers, and you set the app up again.",
        "アプリをリセットします。24時間有効なリンクを通知用アドレスに送ります。リンクを開いてパスワードを入力すると、アプリと信頼済みブラウザが削除され、アプリを再設定できます。",
    ),
    (
        "lost.button",
        "Mail me a reset link",
        "リセット用リンクを受け取る",
    ),
    (
        "reset.mailed",
        "A reset link was sent to {address}. It is valid for 24 hours.",
        "{address} にリセット用リンクを送信しました。有効期間は24時間です。",
    ),
    (
        "reset.helpdesk",
        "You have no notification address, so your reset request was sent to the helpdesk. Please call the helpdesk.",
        "通知用アドレスが登録されていないため、リセットの依頼をヘルプデスクに送りました。ヘルプデスクに電話してください。",
    ),
    (
        "resetlink.title",
        "Reset the authenticator app",
        "認証アプリのリセット",
    ),
    (
        "resetlink.intro",
        "Enter your password to remove your app and trusted browsers. You will then set the app up again.",
        "パスワードを入力すると、アプリと信頼済みブラウザが削除されます。その後アプリを再設定します。",
    ),
    ("resetlink.button", "Reset", "リセットする"),
    (
        "resetlink.done",
        "Your app and trusted browsers were removed. Set the app up again now.",
        "アプリと信頼済みブラウザを削除しました。アプリを再設定してください。",
    ),
    ("home.title", "Your second factor", "二要素認証の設定"),
    (
        "home.hello",
        "Signed in as {name}.",
        "{name} としてログインしています。",
    ),
    ("home.address", "Notification address", "通知用アドレス"),
    ("home.app", "Authenticator app", "認証アプリ"),
    (
        "home.trusted",
        "Trusted browsers and devices",
        "信頼済みのブラウザと端末",
    ),
    ("home.none", "none", "なし"),
    (
        "policy.title",
        "Where a second factor is needed",
        "二要素認証が必要な場所",
    ),
    (
        "policy.radius",
        "VPN, Wi-Fi and network (RADIUS)",
        "VPN・無線LAN・ネットワーク機器 (RADIUS)",
    ),
    (
        "policy.pam",
        "SSH and Linux logins (PAM)",
        "SSH・Linux ログイン (PAM)",
    ),
    ("policy.via", "through {client}", "{client} 経由"),
    ("policy.required", "required", "必須"),
    ("policy.optional", "asked if set up", "設定済みなら必要"),
    ("policy.exempt", "not needed", "不要"),
    (
        "policy.enroll_by",
        "password only until {date} (UTC): set up your second factor before then",
        "{date} (UTC) まではパスワードのみ: それまでに二要素認証を設定してください",
    ),
    ("home.next", "Next steps", "次の手順"),
    (
        "home.step_address",
        "Register your notification address",
        "通知用アドレスを登録する",
    ),
    (
        "home.step_app",
        "Set up the authenticator app",
        "認証アプリを設定する",
    ),
    (
        "state.not-activated",
        "account not activated",
        "アカウント未有効化",
    ),
    ("state.new", "not set up", "未設定"),
    ("state.email-registered", "not set up", "未設定"),
    ("state.app-pending", "set-up not finished", "設定未完了"),
    ("state.app-enrolled", "set up", "設定済み"),
    (
        "warn.no_address",
        "No notification address is registered: if you lose your device, only the helpdesk can help you sign in.",
        "通知用アドレスが登録されていません。端末を紛失した場合、ヘルプデスクに連絡しないとログインできません。",
    ),
    ("address.title", "Notification address", "通知用アドレス"),
    (
        "address.current",
        "Your notification address is {address}.",
        "現在の通知用アドレス: {address}",
    ),
    (
        "address.none",
        "No notification address is registered yet.",
        "通知用アドレスはまだ登録されていません。",
    ),
    (
        "address.label",
        "Mail address (not your university address)",
        "メールアドレス（大学のアドレス以外）",
    ),
    (
        "address.hint",
        "We mail a code to this address; it takes effect when you enter the code.",
        "このアドレスにコードを送ります。コードを入力すると登録されます。",
    ),
    ("address.send", "Send the code", "コードを送信"),
    (
        "address.sent",
        "A code was sent to {address}.",
        "{address} にコードを送信しました。",
    ),
    (
        "address.confirm_title",
        "Confirm the address",
        "アドレスの確認",
    ),
    (
        "address.pending",
        "Enter the code mailed to {address}.",
        "{address} に届いたコードを入力してください。",
    ),
    ("address.code", "Code from the mail", "メールに記載のコード"),
    ("address.confirm", "Confirm", "確認"),
    (
        "address.done",
        "{address} is now your notification address.",
        "{address} を通知用アドレスとして登録しました。",
    ),
    ("app.title", "Authenticator app", "認証アプリ"),
    (
        "app.intro",
        "Install an authenticator app (for example Google Authenticator, Microsoft Authenticator or FreeOTP) on your phone, then start the set-up.",
        "スマートフォンに認証アプリ（Google Authenticator、Microsoft Authenticator、FreeOTP など）をインストールしてから設定を始めてください。",
    ),
    ("app.start", "Set up the app", "アプリを設定する"),
    ("app.setup_title", "Set up the app", "アプリの設定"),
    (
        "app.scan",
        "Scan this QR code with the app:",
        "アプリでこの QR コードを読み取ってください。",
    ),
    (
        "app.typed",
        "Or type this key into the app:",
        "または次のキーをアプリに入力してください。",
    ),
    (
        "app.confirm_label",
        "The code the app shows now",
        "アプリに表示されているコード",
    ),
    ("app.confirm", "Activate", "有効にする"),
    ("app.restart", "Show a new key", "新しいキーを表示する"),
    (
        "app.done",
        "Your authenticator app is set up.",
        "認証アプリを設定しました。",
    ),
    (
        "app.enrolled",
        "Your authenticator app is set up.",
        "認証アプリは設定済みです。",
    ),
    (
        "app.another_title",
        "Add the app to another device",
        "別の端末にアプリを追加",
    ),
    (
        "app.another_text",
        "Enter a code from your app (or a mailed code) to show the QR code again.",
        "アプリのコード（またはメールで届いたコード）を入力すると、QR コードを再表示します。",
    ),
    ("app.another_button", "Show the QR code", "QR コードを表示"),
    (
        "app.reset_text",
        "If your device is lost, reset the app: we mail a link to your notification address.",
        "端末を紛失した場合はアプリをリセットしてください。通知用アドレスにリンクを送ります。",
    ),
    (
        "trusted.title",
        "Trusted browsers and devices",
        "信頼済みのブラウザと端末",
    ),
    (
        "trusted.none",
        "No browser or device is trusted.",
        "信頼済みのブラウザや端末はありません。",
    ),
    ("trusted.device", "Browser or device", "ブラウザ・端末"),
    ("trusted.since", "Since", "登録日時"),
    ("trusted.until", "Until", "有効期限"),
    ("trusted.revoke", "Revoke", "取り消す"),
    ("trusted.revoke_all", "Revoke all", "すべて取り消す"),
    (
        "trusted.revoked",
        "Revoked: {n}.",
        "{n} 件を取り消しました。",
    ),
    ("admin.title", "Helpdesk", "ヘルプデスク"),
    ("admin.lookup", "User ID", "利用者 ID"),
    ("admin.show", "Show", "表示"),
    ("admin.state", "State", "状態"),
    ("admin.locked", "Locked", "ロック"),
    ("admin.yes", "yes", "はい"),
    ("admin.no", "no", "いいえ"),
    ("admin.failures", "Consecutive failures", "連続失敗回数"),
    ("admin.enrolled_at", "App set up at", "アプリ設定日時"),
    (
        "admin.issue",
        "Issue a one-time code",
        "ワンタイムコードを発行",
    ),
    ("admin.unlock", "Unlock", "ロック解除"),
    ("admin.reset", "Reset the app", "アプリをリセット"),
    ("admin.queue", "Helpdesk queue", "ヘルプデスク依頼一覧"),
    (
        "admin.queue_empty",
        "No requests are waiting.",
        "待機中の依頼はありません。",
    ),
    ("admin.kind", "Request", "依頼内容"),
    ("admin.via", "From", "経由"),
    ("admin.when", "Asked at", "依頼日時"),
    (
        "admin.issued",
        "Read this code to {user} after checking who they are:",
        "本人確認の後、{user} さんに次のコードを伝えてください。",
    ),
    (
        "admin.valid_until",
        "Valid until {time}, once.",
        "{time} まで、1回限り有効です。",
    ),
    (
        "admin.unlocked",
        "The user is unlocked.",
        "ロックを解除しました。",
    ),
    (
        "admin.was_reset",
        "The user's app and trusted devices were removed.",
        "アプリと信頼済み端末を削除しました。",
    ),
    (
        "ref.wrong_code",
        "The code is wrong or was already used.",
        "コードが違うか、すでに使用されています。",
    ),
    (
        "ref.locked",
        "Too many failed attempts: the account is locked for a while. Try again later or call the helpdesk.",
        "失敗が多すぎるため、アカウントが一時的にロックされています。しばらくしてから再度お試しいただくか、ヘルプデスクに連絡してください。",
    ),
    (
        "ref.invalid_address",
        "That is not a valid mail address.",
        "有効なメールアドレスではありません。",
    ),
    (
        "ref.denied_domain",
        "Addresses in {domain} cannot be used as a notification address. Use another address (for example a personal one).",
        "{domain} のアドレスは通知用アドレスに使えません。別のアドレス（個人のアドレスなど）を使ってください。",
    ),
    (
        "ref.nothing",
        "There is no valid code or link: it was never sent, already used, or has expired.",
        "有効なコードまたはリンクがありません。未送信、使用済み、または期限切れです。",
    ),
    (
        "ref.no_pending",
        "There is no set-up in progress. Start again.",
        "進行中の設定がありません。最初からやり直してください。",
    ),
    (
        "ref.already",
        "An app is already set up.",
        "アプリはすでに設定されています。",
    ),
    (
        "ref.not_enrolled",
        "No app is set up.",
        "アプリが設定されていません。",
    ),
    (
        "ref.no_device",
        "No such trusted browser.",
        "該当する信頼済みブラウザはありません。",
    ),
    (
        "ref.not_activated",
        "The account is not activated.",
        "アカウントが有効化されていません。",
    ),
    (
        "ref.unknown_user",
        "No such user.",
        "該当する利用者はいません。",
    ),
    (
        "ref.generic",
        "The request was refused.",
        "要求は拒否されました。",
    ),
    ("err.busy", "Busy", "混雑中"),
    (
        "err.busy.text",
        "The service is busy. Please try again in a moment.",
        "混雑しています。しばらくしてから再度お試しください。",
    ),
    ("err.unavailable", "Service unavailable", "サービス停止中"),
    (
        "err.unavailable.text",
        "The service is unavailable at the moment. Please try again later.",
        "現在サービスを利用できません。しばらくしてから再度お試しください。",
    ),
    ("err.internal", "Error", "エラー"),
    (
        "err.internal.text",
        "Something went wrong. Please try again later.",
        "エラーが発生しました。しばらくしてから再度お試しください。",
    ),
    ("err.form", "Bad request", "不正な要求"),
    (
        "err.form.text",
        "The form could not be read. Go back and try again.",
        "フォームを読み取れませんでした。戻ってもう一度お試しください。",
    ),
    ("err.csrf", "Expired form", "フォームの有効期限切れ"),
    (
        "err.csrf.text",
        "This form has expired (or came from elsewhere). Reload the page and try again.",
        "このフォームは無効です（期限切れ、または外部からの送信）。ページを再読み込みしてやり直してください。",
    ),
    ("err.forbidden", "Not allowed", "権限がありません"),
    (
        "err.forbidden.text",
        "This page is for helpdesk operators.",
        "このページはヘルプデスク担当者専用です。",
    ),
    ("err.notfound", "Not found", "ページが見つかりません"),
    (
        "err.notfound.text",
        "There is no such page.",
        "そのようなページはありません。",
    ),
    ("err.link", "Invalid link", "無効なリンク"),
    (
        "err.link.text",
        "This link is incomplete, already used or expired. Ask for a new one.",
        "このリンクは不完全、使用済み、または期限切れです。新しいリンクを依頼してください。",
    ),
    ("err.conflict", "Please try again", "もう一度お試しください"),
    (
        "err.conflict.text",
        "This session was changed by another page at the same moment; nothing of this request was kept. Go back and try again.",
        "同じセッションが同時に別のページから変更されたため、この操作は保存されませんでした。戻ってもう一度お試しください。",
    ),
    (
        "helpdesk.contact",
        "Helpdesk: {contact}",
        "ヘルプデスク: {contact}",
    ),
    (
        "ref.too_many_mails",
        "Too many confirmation mails were sent in the last hour, for you or to this address. Nothing was sent; try again later.",
        "この1時間に、あなた宛てまたはこのアドレス宛ての確認メールが多すぎます。送信していません。しばらくしてから再度お試しください。",
    ),
    ("err.too_many", "Too many attempts", "試行回数の超過"),
    (
        "err.too_many.text",
        "Too many attempts from your address. Wait a few minutes and try again.",
        "お使いのアドレスからの試行が多すぎます。数分待ってから再度お試しください。",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn every_key_used_by_the_pages_is_in_the_catalogue_once() {
        let mut keys: Vec<&str> = CATALOGUE.iter().map(|(k, _, _)| *k).collect();
        keys.sort_unstable();
        let before = keys.len();
        keys.dedup();
        assert_eq!(before, keys.len(), "a key appears twice");
        let sources = [
            include_str!("visit.rs"),
            include_str!("html.rs"),
            include_str!("error.rs"),
            include_str!("app.rs"),
            include_str!("handlers/login.rs"),
            include_str!("handlers/account.rs"),
            include_str!("handlers/admin.rs"),
        ];
        let prefixes = [
            "site",
            "nav.",
            "back.",
            "login.",
            "logout.",
            "code.",
            "help.",
            "helpdesk.",
            "lost.",
            "reset.",
            "resetlink.",
            "home.",
            "warn.",
            "address.",
            "app.",
            "trusted.",
            "admin.",
            "ref.",
            "err.",
        ];
        for src in sources {
            for piece in src.split('"').skip(1).step_by(2) {
                let looks_like_key = prefixes.iter().any(|p| piece.starts_with(p))
                    && piece
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
                    && piece.contains('.')
                    || piece == "site";
                if looks_like_key {
                    assert!(
                        keys.binary_search(&piece).is_ok(),
                        "missing message {piece}"
                    );
                }
            }
        }
        for (key, _, _) in CATALOGUE
            .iter()
            .filter(|(k, _, _)| k.starts_with("err.") && !k.ends_with(".text"))
        {
            assert!(
                keys.binary_search(&format!("{key}.text").as_str()).is_ok(),
                "{key}.text"
            );
        }
        for state in [
            "not-activated",
            "new",
            "email-registered",
            "app-pending",
            "app-enrolled",
        ] {
            assert!(
                keys.binary_search(&format!("state.{state}").as_str())
                    .is_ok()
            );
        }
    }

    #[test]
    fn accept_language_picks_the_best_of_ours() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(v).unwrap());
            negotiate(&m)
        };
        assert_eq!(h("ja-JP,ja;q=0.9,en;q=0.8"), Lang::Ja);
        assert_eq!(h("fr, en;q=0.5, ja;q=0.7"), Lang::Ja);
        assert_eq!(h("en-GB, ja;q=0.3"), Lang::En);
        assert_eq!(h("de"), Lang::En);
        assert_eq!(h("ja;q=abc, en;q=0.1"), Lang::En);
        assert_eq!(negotiate(&HeaderMap::new()), Lang::En);
    }
}
