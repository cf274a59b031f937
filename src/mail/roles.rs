//! The special-use roles (RFC 6154) that folder names say, for servers and stores that
//! flag none (Courier, old Cyrus, many rental hosts, Maildir, mbox): the names people
//! and mail clients give Sent, Drafts, Trash, Junk and Archive, in English and Japanese.
//! The one table both export (local stores) and import (both sides) read.

/// The role a single folder level names (`"Sent Items"` → `\Sent`); English names match
/// whatever their case.
pub fn role_by_name(level: &str) -> Option<&'static str> {
    let role = match level.to_lowercase().as_str() {
        "sent"
        | "sent items"
        | "sent messages"
        | "sent mail"
        | "送信済み"
        | "送信済みメール"
        | "送信済みアイテム" => "\\Sent",
        "drafts" | "draft" | "下書き" => "\\Drafts",
        "trash"
        | "deleted items"
        | "deleted messages"
        | "ごみ箱"
        | "ゴミ箱"
        | "削除済みアイテム" => "\\Trash",
        "junk" | "spam" | "junk e-mail" | "迷惑メール" => "\\Junk",
        "archive" | "archives" | "アーカイブ" => "\\Archive",
        _ => return None,
    };
    Some(role)
}

#[cfg(test)]
mod tests {
    use super::role_by_name;

    #[test]
    fn names_and_case() {
        for (n, r) in [
            ("Sent", "\\Sent"),
            ("SENT ITEMS", "\\Sent"),
            ("Sent Messages", "\\Sent"),
            ("送信済み", "\\Sent"),
            ("送信済みアイテム", "\\Sent"),
            ("送信済みメール", "\\Sent"),
            ("drafts", "\\Drafts"),
            ("下書き", "\\Drafts"),
            ("Trash", "\\Trash"),
            ("Deleted Items", "\\Trash"),
            ("ゴミ箱", "\\Trash"),
            ("削除済みアイテム", "\\Trash"),
            ("Junk", "\\Junk"),
            ("spam", "\\Junk"),
            ("Junk E-mail", "\\Junk"),
            ("迷惑メール", "\\Junk"),
            ("Archive", "\\Archive"),
            ("アーカイブ", "\\Archive"),
        ] {
            assert_eq!(role_by_name(n), Some(r), "{n}");
        }
        for n in ["INBOX", "Sent Items 2019", "Projects", "送信", ""] {
            assert_eq!(role_by_name(n), None, "{n}");
        }
    }
}
