//! PSKC (RFC 6030), as hardware-token vendors ship it and as `csv2pskc` (python-pskc)
//! makes it: one `KeyPackage` per token, with the serial (`DeviceInfo/SerialNo`), the
//! user when assigned (`Key/UserId` or `DeviceInfo/UserId`), the code length
//! (`AlgorithmParameters/ResponseFormat/@Length`), the hash (`AlgorithmParameters/
//! Suite`, SHA1 without it), the step (`Data/TimeInterval`) and the secret
//! (`Data/Secret`), plain (`PlainValue`) or encrypted (`EncryptedValue`).
//!
//! Encrypted files: AES-CBC (`aes128-cbc`, `aes192-cbc`, `aes256-cbc`; the IV is the
//! first 16 bytes of the cipher value) under a pre-shared key (an empty
//! `EncryptionKey`, or one that names it) or a key derived from a password with PBKDF2
//! (`DerivedKey`). Each encrypted value carries an HMAC-SHA1 (`ValueMAC`) over its
//! cipher value, under the MAC key the file holds encrypted (`MACMethod/MACKey`): it is
//! checked before anything is decrypted, so a wrong password or key is refused as such,
//! never read as garbage. Elements are matched by local name (namespace prefixes vary
//! between producers).

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use roxmltree::{Document, Node};
use zeroize::Zeroizing;

use super::{
    FileError, ImportedToken, LineNote, Parsed, PskcKey, check_secret_len, parse_algorithm,
    parse_digits, parse_period,
};
use crate::secret::TotpSecret;

/// PBKDF2 iterations accepted at most (a file cannot make the import spin for hours).
const MAX_ITERATIONS: u32 = 10_000_000;

/// Parses a whole file.
///
/// # Errors
///
/// Malformed XML or not a `KeyContainer` ([`FileError::Malformed`]); an encrypted file
/// without a key ([`FileError::NeedKey`]) or with the wrong one ([`FileError::WrongKey`]).
pub fn parse(text: &str, key: &PskcKey) -> Result<Parsed, FileError> {
    let doc = Document::parse(text)
        .map_err(|e| FileError::Malformed(format!("not a PSKC file (XML): {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "KeyContainer" {
        return Err(FileError::Malformed(format!(
            "line {}: not a PSKC file: the root element is {:?}, not KeyContainer",
            line_of(&doc, root),
            root.tag_name().name()
        )));
    }
    let keys = FileKeys::open(&doc, root, key)?;
    let mut parsed = Parsed::default();
    for package in root.children().filter(|n| is(n, "KeyPackage")) {
        let line = line_of(&doc, package);
        match read_package(package, &keys, line) {
            Ok(token) => parsed.tokens.push(token),
            Err(Entry::Refused(message)) => parsed.refused.push(LineNote {
                line,
                message,
                user: user_of(package),
            }),
            Err(Entry::File(e)) => return Err(e),
        }
    }
    if parsed.tokens.is_empty() && parsed.refused.is_empty() {
        return Err(FileError::Malformed(
            "the PSKC file holds no KeyPackage".into(),
        ));
    }
    Ok(parsed)
}

/// Why one package was not read.
enum Entry {
    /// This entry only.
    Refused(String),
    /// The whole file (a wrong key shows on the first encrypted value).
    File(FileError),
}

impl From<String> for Entry {
    fn from(s: String) -> Self {
        Entry::Refused(s)
    }
}

impl From<&str> for Entry {
    fn from(s: &str) -> Self {
        Entry::Refused(s.to_string())
    }
}

fn is(node: &Node<'_, '_>, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| is(n, name))
}

fn path<'a, 'i>(node: Node<'a, 'i>, names: &[&str]) -> Option<Node<'a, 'i>> {
    names.iter().try_fold(node, |n, name| child(n, name))
}

fn text_of<'a>(node: Option<Node<'a, '_>>) -> Option<&'a str> {
    node.and_then(|n| n.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn line_of(doc: &Document<'_>, node: Node<'_, '_>) -> usize {
    doc.text_pos_at(node.range().start).row as usize
}

/// The keys an encrypted file needs: the encryption key and the MAC key.
struct FileKeys {
    /// `None`: the file has no `EncryptionKey` (plain values only).
    encryption: Option<Zeroizing<Vec<u8>>>,
    mac: Option<Zeroizing<Vec<u8>>>,
}

impl FileKeys {
    fn open(doc: &Document<'_>, root: Node<'_, '_>, given: &PskcKey) -> Result<Self, FileError> {
        let Some(enc) = child(root, "EncryptionKey") else {
            return Ok(Self {
                encryption: None,
                mac: None,
            });
        };
        let line = line_of(doc, enc);
        let encryption = if let Some(derived) = child(enc, "DerivedKey") {
            let PskcKey::Password(password) = given else {
                return Err(FileError::NeedKey(format!(
                    "line {line}: the PSKC file is encrypted with a password: give it \
                     (--pskc-password-file)"
                )));
            };
            derive(derived, password, line)?
        } else {
            match given {
                PskcKey::PreShared(k) => k.clone(),
                _ => {
                    return Err(FileError::NeedKey(format!(
                        "line {line}: the PSKC file is encrypted with a pre-shared key: give \
                         it (--pskc-key-file)"
                    )));
                }
            }
        };
        let mac =
            match path(root, &["MACMethod", "MACKey"]) {
                Some(mac_key) => {
                    let value = cipher_value(mac_key).ok_or_else(|| {
                        FileError::Malformed(format!(
                            "line {}: MACKey has no CipherValue",
                            line_of(doc, mac_key)
                        ))
                    })?;
                    let method = algorithm_of(mac_key);
                    Some(decrypt(&encryption, &value, method.as_deref()).map_err(|_| {
                    FileError::WrongKey(format!(
                        "line {}: the password or key does not open this PSKC file (its MAC \
                         key does not decrypt)",
                        line_of(doc, mac_key)
                    ))
                })?)
                }
                // RFC 6030 §6.1.1 without a MAC key: the encryption key serves.
                None => Some(encryption.clone()),
            };
        Ok(Self {
            encryption: Some(encryption),
            mac,
        })
    }
}

/// PBKDF2 from `DerivedKey/KeyDerivationMethod/PBKDF2-params`.
fn derive(
    derived: Node<'_, '_>,
    password: &str,
    line: usize,
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let bad = |what: &str| FileError::Malformed(format!("line {line}: DerivedKey: {what}"));
    let method =
        child(derived, "KeyDerivationMethod").ok_or_else(|| bad("no KeyDerivationMethod"))?;
    if !method
        .attribute("Algorithm")
        .is_some_and(|a| a.ends_with("#pbkdf2"))
    {
        return Err(bad("only PBKDF2 is supported"));
    }
    let params = child(method, "PBKDF2-params").ok_or_else(|| bad("no PBKDF2-params"))?;
    let salt = text_of(path(params, &["Salt", "Specified"]))
        .and_then(|s| BASE64.decode(s.as_bytes()).ok())
        .ok_or_else(|| bad("no readable Salt/Specified"))?;
    let iterations: u32 = text_of(child(params, "IterationCount"))
        .and_then(|s| s.parse().ok())
        .filter(|n| (1..=MAX_ITERATIONS).contains(n))
        .ok_or_else(|| bad("IterationCount missing or out of range"))?;
    let length: usize = text_of(child(params, "KeyLength"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    if ![16, 24, 32].contains(&length) {
        return Err(bad("KeyLength is not 16, 24 or 32"));
    }
    let prf = child(params, "PRF").and_then(|p| p.attribute("Algorithm").map(str::to_string));
    let mut key = Zeroizing::new(vec![0u8; length]);
    match prf.as_deref() {
        None => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), &salt, iterations, &mut key),
        Some(a) if a.ends_with("hmac-sha1") => {
            pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), &salt, iterations, &mut key)
        }
        Some(a) if a.ends_with("hmac-sha256") => {
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, iterations, &mut key)
        }
        Some(a) if a.ends_with("hmac-sha512") => {
            pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), &salt, iterations, &mut key)
        }
        Some(_) => return Err(bad("PRF is not HMAC-SHA1, -SHA256 or -SHA512")),
    }
    Ok(key)
}

fn cipher_value(node: Node<'_, '_>) -> Option<Vec<u8>> {
    text_of(path(node, &["CipherData", "CipherValue"]))
        .and_then(|s| BASE64.decode(s.as_bytes()).ok())
}

fn algorithm_of(node: Node<'_, '_>) -> Option<String> {
    child(node, "EncryptionMethod")
        .and_then(|m| m.attribute("Algorithm"))
        .map(str::to_string)
}

/// AES-CBC with the IV in front and PKCS#7 padding. `Err(())`: wrong key or length.
fn decrypt(key: &[u8], value: &[u8], method: Option<&str>) -> Result<Zeroizing<Vec<u8>>, ()> {
    if let Some(m) = method {
        if !m.ends_with("-cbc") {
            return Err(());
        }
    }
    let (iv, data) = value.split_at_checked(16).ok_or(())?;
    let mut buf = Zeroizing::new(data.to_vec());
    let n = match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(|_| ())?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| ())?
            .len(),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(|_| ())?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| ())?
            .len(),
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(|_| ())?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| ())?
            .len(),
        _ => return Err(()),
    };
    buf.truncate(n);
    Ok(buf)
}

/// The value of `Data/<name>`: plain, or encrypted (MAC checked first).
fn data_value(
    data: Node<'_, '_>,
    name: &str,
    keys: &FileKeys,
    line: usize,
) -> Result<Option<Zeroizing<Vec<u8>>>, Entry> {
    let Some(node) = child(data, name) else {
        return Ok(None);
    };
    if let Some(plain) = text_of(child(node, "PlainValue")) {
        return Ok(Some(Zeroizing::new(plain.as_bytes().to_vec())));
    }
    let Some(encrypted) = child(node, "EncryptedValue") else {
        return Err(format!("{name} has neither PlainValue nor EncryptedValue").into());
    };
    let (Some(key), Some(mac_key)) = (&keys.encryption, &keys.mac) else {
        return Err(Entry::File(FileError::Malformed(format!(
            "line {line}: an encrypted {name} in a file without EncryptionKey"
        ))));
    };
    let value = cipher_value(encrypted).ok_or(format!("{name}: no readable CipherValue"))?;
    let Some(mac) = text_of(child(node, "ValueMAC")).and_then(|m| BASE64.decode(m.as_bytes()).ok())
    else {
        return Err(format!("{name}: an encrypted value without its ValueMAC").into());
    };
    let mut check = <Hmac<sha1::Sha1> as Mac>::new_from_slice(mac_key)
        .map_err(|_| Entry::Refused("the MAC key is unusable".into()))?;
    check.update(&value);
    if check.verify_slice(&mac).is_err() {
        return Err(Entry::File(FileError::WrongKey(format!(
            "line {line}: the password or key does not open this PSKC file (the MAC of \
             {name} does not match)"
        ))));
    }
    let plain = decrypt(key, &value, algorithm_of(encrypted).as_deref()).map_err(|()| {
        Entry::File(FileError::WrongKey(format!(
            "line {line}: {name} does not decrypt with the given key"
        )))
    })?;
    Ok(Some(plain))
}

/// The user a package names, if any.
fn user_of(package: Node<'_, '_>) -> Option<String> {
    child(package, "Key")
        .and_then(|k| text_of(child(k, "UserId")))
        .or_else(|| text_of(path(package, &["DeviceInfo", "UserId"])))
        .map(str::to_string)
}

fn read_package(
    package: Node<'_, '_>,
    keys: &FileKeys,
    line: usize,
) -> Result<ImportedToken, Entry> {
    let key = child(package, "Key").ok_or("a KeyPackage without Key")?;
    let algorithm = key.attribute("Algorithm").unwrap_or("");
    if !algorithm.ends_with(":totp") && !algorithm.ends_with("#totp") {
        return Err(format!(
            "algorithm {algorithm:?} is not TOTP (urn:ietf:params:xml:ns:keyprov:pskc:totp); \
             otpgate takes TOTP tokens only"
        )
        .into());
    }
    let serial = text_of(path(package, &["DeviceInfo", "SerialNo"])).map(str::to_string);
    let user = user_of(package);
    let params = child(key, "AlgorithmParameters");
    let digits = params
        .and_then(|p| child(p, "ResponseFormat"))
        .and_then(|r| r.attribute("Length"))
        .map(parse_digits)
        .transpose()?;
    if let Some(encoding) = params
        .and_then(|p| child(p, "ResponseFormat"))
        .and_then(|r| r.attribute("Encoding"))
    {
        if !encoding.eq_ignore_ascii_case("DECIMAL") {
            return Err(format!("response encoding {encoding:?} is not DECIMAL").into());
        }
    }
    let hash = text_of(params.and_then(|p| child(p, "Suite")))
        .map(parse_algorithm)
        .transpose()?;
    let data = child(key, "Data").ok_or("a Key without Data")?;
    let period = match data_value(data, "TimeInterval", keys, line)? {
        Some(v) => Some(parse_period(&String::from_utf8_lossy(&v))?),
        None => None,
    };
    let secret = data_value(data, "Secret", keys, line)?.ok_or("a Key without Secret")?;
    let is_plain = child(data, "Secret")
        .and_then(|s| child(s, "PlainValue"))
        .is_some();
    let bytes = if is_plain {
        Zeroizing::new(
            BASE64
                .decode(&secret)
                .map_err(|_| Entry::Refused("Secret/PlainValue is not base64".into()))?,
        )
    } else {
        secret
    };
    check_secret_len(&bytes)?;
    Ok(ImportedToken {
        line,
        user,
        name: serial.clone(),
        serial,
        secret: TotpSecret::from_bytes(&bytes),
        digits,
        period: Some(period.unwrap_or(30)),
        algorithm: Some(hash.unwrap_or(otpgate_config::TotpAlgorithm::Sha1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = include_str!("testdata/plain.pskc");
    const PASSWORD: &str = include_str!("testdata/password.pskc");
    const PSK: &str = include_str!("testdata/psk.pskc");

    fn check(parsed: &Parsed) {
        assert!(parsed.refused.is_empty(), "{:?}", parsed.refused);
        assert_eq!(parsed.tokens.len(), 2);
        let a = &parsed.tokens[0];
        assert_eq!(a.serial.as_deref(), Some("12345678"));
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!((a.digits, a.period), (Some(8), Some(60)));
        assert_eq!(a.secret.expose(), b"12345678901234567890");
        let b = &parsed.tokens[1];
        assert_eq!(b.serial.as_deref(), Some("87654321"));
        assert_eq!(b.user, None);
        assert_eq!((b.digits, b.period), (Some(6), Some(30)));
        assert_eq!(b.secret.expose(), b"12345678901234567891");
    }

    /// The three files were made by `csv2pskc` (python-pskc 1.2) from
    /// `testdata/pskc-source.csv`: plain, `--password secretpw`, `--secret 1234…9012`.
    #[test]
    fn csv2pskc_files_plain_password_and_preshared_key() {
        let plain = parse(PLAIN, &PskcKey::None).unwrap();
        check(&plain);
        assert_eq!(plain.tokens[0].line, 3, "the KeyPackage's line");
        check(
            &parse(
                PASSWORD,
                &PskcKey::Password(Zeroizing::new("secretpw".into())),
            )
            .unwrap(),
        );
        let key = data_encoding::HEXLOWER
            .decode(b"12345678901234567890123456789012")
            .unwrap();
        check(&parse(PSK, &PskcKey::PreShared(Zeroizing::new(key))).unwrap());
    }

    #[test]
    fn a_wrong_or_missing_key_is_refused_precisely() {
        let wrong = parse(PASSWORD, &PskcKey::Password(Zeroizing::new("nope".into()))).unwrap_err();
        assert!(matches!(wrong, FileError::WrongKey(_)), "{wrong}");
        assert!(wrong.to_string().contains("does not open"), "{wrong}");
        let missing = parse(PASSWORD, &PskcKey::None).unwrap_err();
        assert!(matches!(missing, FileError::NeedKey(_)), "{missing}");
        let wrong_psk = parse(PSK, &PskcKey::PreShared(Zeroizing::new(vec![7u8; 16]))).unwrap_err();
        assert!(matches!(wrong_psk, FileError::WrongKey(_)), "{wrong_psk}");
    }

    #[test]
    fn malformed_files_and_entries() {
        assert!(matches!(
            parse("<a", &PskcKey::None),
            Err(FileError::Malformed(_))
        ));
        assert!(matches!(
            parse("<foo/>", &PskcKey::None),
            Err(FileError::Malformed(_))
        ));
        let hotp = PLAIN.replacen(":totp\"", ":hotp\"", 1);
        let parsed = parse(&hotp, &PskcKey::None).unwrap();
        assert_eq!(parsed.tokens.len(), 1);
        assert_eq!(parsed.refused.len(), 1);
        assert_eq!(parsed.refused[0].line, 3);
        assert!(parsed.refused[0].message.contains("not TOTP"));
    }
}
