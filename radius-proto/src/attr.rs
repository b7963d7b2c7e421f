//! RADIUS attributes: type numbers, the [`Attribute`] value, and builders.
//!
//! Type numbers come from RFC 2865 (base), RFC 2868 (tunnels), RFC 2869 and
//! RFC 3579 (EAP, Message-Authenticator) and RFC 5997 (Status-Server). Only the
//! attributes otpgate reads or writes are named; every other attribute is
//! carried as an opaque [`Attribute`] and ignored by the server.

use crate::reader::Reader;

/// User-Name (RFC 2865 §5.1).
pub const USER_NAME: u8 = 1;
/// User-Password, hidden with the shared secret (RFC 2865 §5.2).
pub const USER_PASSWORD: u8 = 2;
/// CHAP-Password (RFC 2865 §5.3); otpgate rejects CHAP.
pub const CHAP_PASSWORD: u8 = 3;
/// NAS-IP-Address (RFC 2865 §5.4).
pub const NAS_IP_ADDRESS: u8 = 4;
/// NAS-Port (RFC 2865 §5.5).
pub const NAS_PORT: u8 = 5;
/// Service-Type (RFC 2865 §5.6).
pub const SERVICE_TYPE: u8 = 6;
/// Filter-Id (RFC 2865 §5.11).
pub const FILTER_ID: u8 = 11;
/// Reply-Message (RFC 2865 §5.18); text shown to the user.
pub const REPLY_MESSAGE: u8 = 18;
/// State (RFC 2865 §5.24); opaque, echoed by the client after a challenge.
pub const STATE: u8 = 24;
/// Class (RFC 2865 §5.25).
pub const CLASS: u8 = 25;
/// Vendor-Specific (RFC 2865 §5.26).
pub const VENDOR_SPECIFIC: u8 = 26;
/// Session-Timeout (RFC 2865 §5.27), seconds.
pub const SESSION_TIMEOUT: u8 = 27;
/// Called-Station-Id (RFC 2865 §5.30).
pub const CALLED_STATION_ID: u8 = 30;
/// Calling-Station-Id (RFC 2865 §5.31).
pub const CALLING_STATION_ID: u8 = 31;
/// NAS-Identifier (RFC 2865 §5.32).
pub const NAS_IDENTIFIER: u8 = 32;
/// Proxy-State (RFC 2865 §5.33); copied unchanged, in order, into the reply.
pub const PROXY_STATE: u8 = 33;
/// CHAP-Challenge (RFC 2865 §5.40).
pub const CHAP_CHALLENGE: u8 = 60;
/// NAS-Port-Type (RFC 2865 §5.41).
pub const NAS_PORT_TYPE: u8 = 61;
/// Tunnel-Type (RFC 2868 §3.1); tagged, 3-byte value.
pub const TUNNEL_TYPE: u8 = 64;
/// Tunnel-Medium-Type (RFC 2868 §3.2); tagged, 3-byte value.
pub const TUNNEL_MEDIUM_TYPE: u8 = 65;
/// EAP-Message (RFC 3579 §3.1); otpgate rejects EAP.
pub const EAP_MESSAGE: u8 = 79;
/// Message-Authenticator (RFC 3579 §3.2): HMAC-MD5 over the packet.
pub const MESSAGE_AUTHENTICATOR: u8 = 80;
/// Tunnel-Private-Group-Id (RFC 2868 §3.6); optional tag, then text (a VLAN id).
pub const TUNNEL_PRIVATE_GROUP_ID: u8 = 81;

/// Tunnel-Type value VLAN (RFC 3580 §3.31).
pub const TUNNEL_TYPE_VLAN: u32 = 13;
/// Tunnel-Medium-Type value IEEE-802 (RFC 2868 §3.2, IANA registry).
pub const TUNNEL_MEDIUM_IEEE_802: u32 = 6;

/// Vendor id of Microsoft, whose Vendor-Specific attributes carry MS-CHAP (RFC 2548).
pub const VENDOR_MICROSOFT: u32 = 311;
/// Vendor id under which otpgate sends its own attributes. 32473 is the number RFC 5612
/// sets aside for documentation: a placeholder until a Private Enterprise Number is
/// registered; only otpgate's own PAM module reads these attributes.
pub const VENDOR_OTPGATE: u32 = 32_473;
/// otpgate vendor type: why an Access-Reject was sent (`unknown-user`, `locked`,
/// `not-enrolled`), only to clients configured with `reject_reasons = true`.
pub const OTPGATE_REJECT_REASON: u8 = 1;
/// Microsoft vendor types that mean an MS-CHAP or MS-CHAPv2 authentication
/// attempt (RFC 2548 §2.1–2.3): MS-CHAP-Response, MS-CHAP-CPW-1, MS-CHAP-CPW-2,
/// MS-CHAP-Challenge, MS-CHAP2-Response, MS-CHAP2-CPW.
pub const MS_CHAP_VENDOR_TYPES: [u8; 6] = [1, 3, 4, 11, 25, 27];

/// The largest value an attribute can carry: its length octet counts the two
/// header bytes and cannot exceed 255.
pub const MAX_VALUE_LEN: usize = 253;

/// The highest tag RFC 2868 allows; a first byte above it is part of the value.
pub const MAX_TUNNEL_TAG: u8 = 0x1F;

/// A parsed Vendor-Specific value: the vendor id and each sub-attribute's
/// (vendor type, data), in order.
pub type VendorSubAttributes<'a> = (u32, Vec<(u8, &'a [u8])>);

/// One attribute as it travels on the wire: a type and an opaque value.
///
/// The value holds the bytes after the two header bytes. Builders check that
/// it fits ([`MAX_VALUE_LEN`]); the encoder checks again, since the fields are
/// public.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attribute {
    /// The attribute type number, one of the constants of this module or any other.
    pub typ: u8,
    /// The value, without the type and length bytes.
    pub value: Vec<u8>,
}

/// An attribute could not be built from the given value.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// The value is longer than [`MAX_VALUE_LEN`]; shorten it or, for
    /// Reply-Message, use [`Attribute::reply_messages`], which splits.
    #[error("attribute {typ} value of {len} bytes exceeds 253")]
    TooLong {
        /// The attribute type.
        typ: u8,
        /// The length that was given.
        len: usize,
    },
    /// A tunnel tag above 0x1F (RFC 2868); use a tag in 0..=0x1F.
    #[error("tunnel tag {tag:#x} is above 0x1f")]
    InvalidTag {
        /// The tag that was given.
        tag: u8,
    },
    /// An integer does not fit the attribute's field (tunnel values have 24 bits).
    #[error("value {value} does not fit in 24 bits")]
    ValueOutOfRange {
        /// The value that was given.
        value: u32,
    },
    /// An untagged Tunnel-Private-Group-Id that is empty or starts with a byte
    /// ≤ 0x1F would be read back as tagged; give it a tag.
    #[error("untagged Tunnel-Private-Group-Id would be read as tagged")]
    AmbiguousTag,
}

impl Attribute {
    /// An attribute with the given raw value.
    ///
    /// # Errors
    ///
    /// [`AttributeError::TooLong`] if the value exceeds [`MAX_VALUE_LEN`].
    pub fn new(typ: u8, value: impl Into<Vec<u8>>) -> Result<Self, AttributeError> {
        let value = value.into();
        if value.len() > MAX_VALUE_LEN {
            return Err(AttributeError::TooLong {
                typ,
                len: value.len(),
            });
        }
        Ok(Self { typ, value })
    }

    /// A text attribute (Filter-Id, Class, NAS-Identifier, …) from UTF-8.
    ///
    /// # Errors
    ///
    /// [`AttributeError::TooLong`] if the text exceeds [`MAX_VALUE_LEN`] bytes.
    pub fn string(typ: u8, text: &str) -> Result<Self, AttributeError> {
        Self::new(typ, text.as_bytes())
    }

    /// A 32-bit integer attribute in network order (Session-Timeout, NAS-Port, …).
    #[must_use]
    pub fn integer(typ: u8, value: u32) -> Self {
        Self {
            typ,
            value: value.to_be_bytes().to_vec(),
        }
    }

    /// Tunnel-Type (RFC 2868 §3.1): a tag byte then a 3-byte value,
    /// e.g. `Attribute::tunnel_type(0, TUNNEL_TYPE_VLAN)`. Tag 0 means "no tag".
    ///
    /// # Errors
    ///
    /// [`AttributeError::InvalidTag`] or [`AttributeError::ValueOutOfRange`].
    pub fn tunnel_type(tag: u8, value: u32) -> Result<Self, AttributeError> {
        Self::tagged_u24(TUNNEL_TYPE, tag, value)
    }

    /// Tunnel-Medium-Type (RFC 2868 §3.2): a tag byte then a 3-byte value,
    /// e.g. `Attribute::tunnel_medium_type(0, TUNNEL_MEDIUM_IEEE_802)`.
    ///
    /// # Errors
    ///
    /// [`AttributeError::InvalidTag`] or [`AttributeError::ValueOutOfRange`].
    pub fn tunnel_medium_type(tag: u8, value: u32) -> Result<Self, AttributeError> {
        Self::tagged_u24(TUNNEL_MEDIUM_TYPE, tag, value)
    }

    fn tagged_u24(typ: u8, tag: u8, value: u32) -> Result<Self, AttributeError> {
        if tag > MAX_TUNNEL_TAG {
            return Err(AttributeError::InvalidTag { tag });
        }
        let [top, a, b, c] = value.to_be_bytes();
        if top != 0 {
            return Err(AttributeError::ValueOutOfRange { value });
        }
        Ok(Self {
            typ,
            value: vec![tag, a, b, c],
        })
    }

    /// Tunnel-Private-Group-Id (RFC 2868 §3.6), e.g. a VLAN id such as `"120"`.
    ///
    /// With `Some(tag)` the tag byte (0x01..=0x1F) precedes the text. With
    /// `None` no tag byte is written, which RFC 2868 allows only when the text
    /// cannot be mistaken for a tag, so empty text or text whose first byte is
    /// ≤ 0x1F is refused.
    ///
    /// # Errors
    ///
    /// [`AttributeError::InvalidTag`] for a tag of 0 or above 0x1F,
    /// [`AttributeError::AmbiguousTag`], or [`AttributeError::TooLong`].
    pub fn tunnel_private_group_id(tag: Option<u8>, group: &str) -> Result<Self, AttributeError> {
        let mut value = Vec::with_capacity(group.len().saturating_add(1));
        match tag {
            Some(tag) if tag == 0 || tag > MAX_TUNNEL_TAG => {
                return Err(AttributeError::InvalidTag { tag });
            }
            Some(tag) => value.push(tag),
            None => match group.as_bytes().first() {
                Some(&first) if first > MAX_TUNNEL_TAG => {}
                _ => return Err(AttributeError::AmbiguousTag),
            },
        }
        value.extend_from_slice(group.as_bytes());
        Self::new(TUNNEL_PRIVATE_GROUP_ID, value)
    }

    /// A Vendor-Specific attribute (RFC 2865 §5.26) holding one sub-attribute.
    ///
    /// # Errors
    ///
    /// [`AttributeError::TooLong`] if `data` exceeds 247 bytes.
    pub fn vendor_specific(
        vendor: u32,
        vendor_type: u8,
        data: &[u8],
    ) -> Result<Self, AttributeError> {
        let too_long = AttributeError::TooLong {
            typ: VENDOR_SPECIFIC,
            len: data.len().saturating_add(6),
        };
        let sub_len = u8::try_from(data.len().saturating_add(2)).map_err(|_| too_long)?;
        let mut value = Vec::with_capacity(usize::from(sub_len).saturating_add(4));
        value.extend_from_slice(&vendor.to_be_bytes());
        value.push(vendor_type);
        value.push(sub_len);
        value.extend_from_slice(data);
        Self::new(VENDOR_SPECIFIC, value)
    }

    /// Reply-Message attributes carrying `text`, split into as many attributes
    /// as needed (RFC 2865 §5.18: the client shows them concatenated, in order).
    ///
    /// Splits fall on UTF-8 character boundaries, so every part is valid text.
    /// Empty text gives no attribute at all.
    #[must_use]
    pub fn reply_messages(text: &str) -> Vec<Self> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len().min(MAX_VALUE_LEN);
            while !rest.is_char_boundary(cut) {
                cut = cut.saturating_sub(1);
            }
            let (part, tail) = rest.split_at(cut);
            out.push(Self {
                typ: REPLY_MESSAGE,
                value: part.as_bytes().to_vec(),
            });
            rest = tail;
        }
        out
    }

    /// The value as a 32-bit integer, if it is exactly four bytes.
    #[must_use]
    pub fn as_u32(&self) -> Option<u32> {
        <[u8; 4]>::try_from(self.value.as_slice())
            .ok()
            .map(u32::from_be_bytes)
    }

    /// For a Vendor-Specific attribute, its vendor id and the (type, data) of
    /// each well-formed sub-attribute in the RFC 2865 §5.26 suggested format.
    ///
    /// Returns `None` if this is not Vendor-Specific, is shorter than a vendor
    /// id, or its sub-attributes do not exactly fill the value.
    #[must_use]
    pub fn vendor_sub_attributes(&self) -> Option<VendorSubAttributes<'_>> {
        if self.typ != VENDOR_SPECIFIC {
            return None;
        }
        let mut r = Reader::new(&self.value);
        let vendor = r.u32_be()?;
        let mut subs = Vec::new();
        while r.any_left() {
            let typ = r.u8()?;
            let len = usize::from(r.u8()?);
            let data = r.take(len.checked_sub(2)?)?;
            subs.push((typ, data));
        }
        Some((vendor, subs))
    }

    /// Whether this is a Microsoft Vendor-Specific attribute carrying an
    /// MS-CHAP or MS-CHAPv2 element (see [`MS_CHAP_VENDOR_TYPES`]).
    #[must_use]
    pub fn is_mschap(&self) -> bool {
        match self.vendor_sub_attributes() {
            Some((VENDOR_MICROSOFT, subs)) => subs
                .iter()
                .any(|(typ, _)| MS_CHAP_VENDOR_TYPES.contains(typ)),
            Some(_) | None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_refuses_values_over_253_bytes() {
        assert!(Attribute::new(CLASS, vec![0; 253]).is_ok());
        assert_eq!(
            Attribute::new(CLASS, vec![0; 254]),
            Err(AttributeError::TooLong {
                typ: CLASS,
                len: 254
            })
        );
        assert!(Attribute::string(FILTER_ID, &"x".repeat(254)).is_err());
    }

    #[test]
    fn integer_is_network_order() {
        let a = Attribute::integer(SESSION_TIMEOUT, 3600);
        assert_eq!(a.value, vec![0, 0, 0x0e, 0x10]);
        assert_eq!(a.as_u32(), Some(3600));
        assert_eq!(Attribute::string(CLASS, "abc").unwrap().as_u32(), None);
    }

    #[test]
    fn tunnel_attributes_for_a_vlan() {
        let t = Attribute::tunnel_type(0, TUNNEL_TYPE_VLAN).unwrap();
        assert_eq!((t.typ, t.value.as_slice()), (64, &[0, 0, 0, 13][..]));
        let m = Attribute::tunnel_medium_type(1, TUNNEL_MEDIUM_IEEE_802).unwrap();
        assert_eq!((m.typ, m.value.as_slice()), (65, &[1, 0, 0, 6][..]));
        let g = Attribute::tunnel_private_group_id(None, "120").unwrap();
        assert_eq!((g.typ, g.value.as_slice()), (81, &b"120"[..]));
        let g = Attribute::tunnel_private_group_id(Some(2), "120").unwrap();
        assert_eq!(g.value, b"\x02120");
    }

    #[test]
    fn tunnel_attributes_refuse_bad_tags_and_values() {
        assert_eq!(
            Attribute::tunnel_type(0x20, 13),
            Err(AttributeError::InvalidTag { tag: 0x20 })
        );
        assert_eq!(
            Attribute::tunnel_medium_type(0, 0x0100_0000),
            Err(AttributeError::ValueOutOfRange { value: 0x0100_0000 })
        );
        assert!(Attribute::tunnel_type(0, 0x00FF_FFFF).is_ok());
        assert_eq!(
            Attribute::tunnel_private_group_id(Some(0), "1"),
            Err(AttributeError::InvalidTag { tag: 0 })
        );
        assert_eq!(
            Attribute::tunnel_private_group_id(None, "\x05x"),
            Err(AttributeError::AmbiguousTag)
        );
        assert_eq!(
            Attribute::tunnel_private_group_id(None, ""),
            Err(AttributeError::AmbiguousTag)
        );
        assert!(Attribute::tunnel_private_group_id(Some(1), &"9".repeat(252)).is_ok());
        assert!(Attribute::tunnel_private_group_id(Some(1), &"9".repeat(253)).is_err());
    }

    #[test]
    fn reply_messages_split_on_character_boundaries() {
        assert!(Attribute::reply_messages("").is_empty());
        let short = Attribute::reply_messages("Enter the code");
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].value, b"Enter the code");

        // 100 three-byte characters: 300 bytes, and 253 is not a boundary.
        let text = "あ".repeat(100);
        let parts = Attribute::reply_messages(&text);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.typ == REPLY_MESSAGE));
        assert!(parts.iter().all(|p| p.value.len() <= MAX_VALUE_LEN));
        assert_eq!(parts[0].value.len(), 252);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.value.clone()).collect();
        assert_eq!(joined, text.as_bytes());
        assert!(parts.iter().all(|p| std::str::from_utf8(&p.value).is_ok()));
    }

    #[test]
    fn vendor_specific_round_trip_and_mschap_detection() {
        let vsa = Attribute::vendor_specific(VENDOR_MICROSOFT, 11, &[7; 16]).unwrap();
        assert_eq!(vsa.value.len(), 4 + 2 + 16);
        let (vendor, subs) = vsa.vendor_sub_attributes().unwrap();
        assert_eq!(vendor, 311);
        assert_eq!(subs, vec![(11, &[7u8; 16][..])]);
        assert!(vsa.is_mschap());

        let other_vendor = Attribute::vendor_specific(9, 11, b"x").unwrap();
        assert!(!other_vendor.is_mschap());
        let ms_other_type = Attribute::vendor_specific(VENDOR_MICROSOFT, 16, b"key").unwrap();
        assert!(!ms_other_type.is_mschap());
        assert!(Attribute::vendor_specific(1, 1, &[0; 247]).is_ok());
        assert!(Attribute::vendor_specific(1, 1, &[0; 248]).is_err());
    }

    #[test]
    fn malformed_vendor_specific_is_not_parsed() {
        let short = Attribute {
            typ: VENDOR_SPECIFIC,
            value: vec![0, 0, 1],
        };
        assert_eq!(short.vendor_sub_attributes(), None);
        let bad_sub_len = Attribute {
            typ: VENDOR_SPECIFIC,
            value: vec![0, 0, 1, 55, 11, 1],
        };
        assert_eq!(bad_sub_len.vendor_sub_attributes(), None);
        let overrun = Attribute {
            typ: VENDOR_SPECIFIC,
            value: vec![0, 0, 1, 55, 11, 9, 0],
        };
        assert_eq!(overrun.vendor_sub_attributes(), None);
        assert!(!overrun.is_mschap());
        let not_vsa = Attribute {
            typ: CLASS,
            value: vec![0, 0, 1, 55, 11, 2],
        };
        assert_eq!(not_vsa.vendor_sub_attributes(), None);
    }
}
