//! The RADIUS packet and its strict wire codec (RFC 2865 §3, §5).
//!
//! [`decode`] accepts only what otpgate serves or expects back: the codes of
//! [`Code`], a Length field in `20..=4096` that the datagram covers, and
//! attributes that exactly fill the packet. Bytes past the Length field are
//! padding and ignored (RFC 2865 §3). [`encode`] is the exact inverse for every
//! packet [`decode`] accepts, and refuses what [`decode`] would refuse.

use crate::attr::{Attribute, MAX_VALUE_LEN};
use crate::reader::Reader;

/// Size of the fixed header: code, identifier, length, authenticator.
pub const HEADER_LEN: usize = 20;
/// Largest packet RFC 2865 §3 allows.
pub const MAX_PACKET_LEN: usize = 4096;
/// Most attributes one packet may carry; more is refused on both sides.
///
/// A legitimate Access-Request carries a dozen or two; the cap bounds the work
/// and memory an attacker can cause per datagram.
pub const MAX_ATTRIBUTES: usize = 100;

/// The packet codes otpgate handles. Accounting and CoA are not served, so
/// their codes are decoding errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// Access-Request (1).
    AccessRequest,
    /// Access-Accept (2).
    AccessAccept,
    /// Access-Reject (3).
    AccessReject,
    /// Access-Challenge (11).
    AccessChallenge,
    /// Status-Server (12, RFC 5997).
    StatusServer,
}

impl Code {
    /// The code's number on the wire.
    #[must_use]
    pub fn to_u8(self) -> u8 {
        match self {
            Self::AccessRequest => 1,
            Self::AccessAccept => 2,
            Self::AccessReject => 3,
            Self::AccessChallenge => 11,
            Self::StatusServer => 12,
        }
    }

    /// The code for a number, or `None` for codes otpgate does not handle.
    #[must_use]
    pub fn from_u8(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::AccessRequest),
            2 => Some(Self::AccessAccept),
            3 => Some(Self::AccessReject),
            11 => Some(Self::AccessChallenge),
            12 => Some(Self::StatusServer),
            _ => None,
        }
    }

    /// Whether this code is sent by a client (Access-Request, Status-Server).
    #[must_use]
    pub fn is_request(self) -> bool {
        matches!(self, Self::AccessRequest | Self::StatusServer)
    }
}

/// A decoded RADIUS packet; no check of any authenticator has been made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// What kind of packet this is.
    pub code: Code,
    /// Matches a reply to its request (RFC 2865 §3).
    pub identifier: u8,
    /// Request Authenticator (random) or Response Authenticator (MD5).
    pub authenticator: [u8; 16],
    /// The attributes, in wire order.
    pub attributes: Vec<Attribute>,
}

impl Packet {
    /// Iterates over the values of all attributes of type `typ`, in order.
    pub fn values(&self, typ: u8) -> impl Iterator<Item = &[u8]> {
        self.attributes
            .iter()
            .filter(move |a| a.typ == typ)
            .map(|a| a.value.as_slice())
    }

    /// The value of the first attribute of type `typ`.
    #[must_use]
    pub fn first(&self, typ: u8) -> Option<&[u8]> {
        self.values(typ).next()
    }

    /// How many attributes of type `typ` the packet carries.
    #[must_use]
    pub fn count(&self, typ: u8) -> usize {
        self.values(typ).count()
    }

    /// The length of the encoded packet, header included.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.attributes.iter().fold(HEADER_LEN, |len, a| {
            len.saturating_add(a.value.len()).saturating_add(2)
        })
    }
}

/// Why a datagram was refused by [`decode`].
///
/// Every variant means "drop the datagram and count it" (SPEC §5, strict
/// decoding); none carries attacker data beyond a few integers, so the error
/// is cheap to create and safe to log. Use [`DecodeError::kind`] as a metrics
/// label.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The datagram is shorter than the 20-byte header.
    #[error("datagram of {len} bytes is shorter than the RADIUS header")]
    TooShort {
        /// The datagram length.
        len: usize,
    },
    /// The code is not one otpgate handles (accounting, CoA, or unassigned).
    #[error("unknown packet code {0}")]
    UnknownCode(u8),
    /// The Length field is outside `20..=4096`.
    #[error("length field {0} is outside 20..=4096")]
    LengthOutOfRange(u16),
    /// The Length field claims more bytes than the datagram holds.
    #[error("length field {length} exceeds the datagram of {datagram} bytes")]
    LengthExceedsDatagram {
        /// The Length field.
        length: u16,
        /// The datagram length.
        datagram: usize,
    },
    /// An attribute's length octet is 0 or 1, less than its own header.
    #[error("attribute at offset {offset} has length {length}")]
    AttributeTooShort {
        /// Offset of the attribute in the packet.
        offset: usize,
        /// Its length octet.
        length: u8,
    },
    /// An attribute runs past the end of the packet (as given by Length).
    #[error("attribute at offset {offset} runs past the end of the packet")]
    AttributeOverrun {
        /// Offset of the attribute in the packet.
        offset: usize,
    },
    /// The packet carries more than [`MAX_ATTRIBUTES`] attributes.
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    /// An attribute has type 0, which RFC 2865 leaves unassigned and no sender
    /// may use; FreeRADIUS drops such packets too ("Invalid attribute 0").
    #[error("attribute at offset {offset} has type 0")]
    AttributeTypeZero {
        /// Offset of the attribute in the packet.
        offset: usize,
    },
}

impl DecodeError {
    /// A stable, low-cardinality name for metrics labels and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_short",
            Self::UnknownCode(_) => "unknown_code",
            Self::LengthOutOfRange(_) => "length_out_of_range",
            Self::LengthExceedsDatagram { .. } => "length_exceeds_datagram",
            Self::AttributeTooShort { .. } => "attribute_too_short",
            Self::AttributeOverrun { .. } => "attribute_overrun",
            Self::TooManyAttributes => "too_many_attributes",
            Self::AttributeTypeZero { .. } => "attribute_type_zero",
        }
    }
}

/// Why a packet could not be encoded.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An attribute value exceeds 253 bytes; shorten it, or split text with
    /// [`Attribute::reply_messages`].
    #[error("attribute {typ} value of {len} bytes exceeds 253")]
    AttributeTooLong {
        /// The attribute type.
        typ: u8,
        /// The value's length.
        len: usize,
    },
    /// The encoded packet would exceed 4096 bytes; send fewer attributes.
    #[error("packet of {len} bytes exceeds 4096")]
    PacketTooLong {
        /// The length the packet would have.
        len: usize,
    },
    /// More than [`MAX_ATTRIBUTES`] attributes; the peer would refuse it.
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    /// A reply code that does not answer the request (for example
    /// Access-Challenge to Status-Server, or a request code); a caller bug.
    #[error("{reply:?} is not a reply to {request:?}")]
    InvalidReplyCode {
        /// The request's code.
        request: Code,
        /// The reply code that was asked for.
        reply: Code,
    },
    /// The caller passed an attribute that the encoder adds itself
    /// (Message-Authenticator, Proxy-State); a caller bug.
    #[error("attribute {typ} is added by the encoder and may not be given")]
    ReservedAttribute {
        /// The attribute type.
        typ: u8,
    },
    /// An attribute of type 0, which [`decode`] refuses; a caller bug.
    #[error("attribute type 0 is not valid")]
    AttributeTypeZero,
    /// The HMAC implementation refused the shared secret. Cannot happen for a
    /// [`crate::Secret`] built by its constructor; kept so no path panics.
    #[error("the shared secret was refused by HMAC-MD5")]
    InvalidSecret,
}

/// Decodes one datagram into a [`Packet`], strictly.
///
/// # Errors
///
/// A [`DecodeError`] for any deviation from RFC 2865 framing: see its variants.
pub fn decode(datagram: &[u8]) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(datagram);
    let (Some(code), Some(identifier), Some(length), Some(authenticator)) =
        (r.u8(), r.u8(), r.u16_be(), r.array::<16>())
    else {
        return Err(DecodeError::TooShort {
            len: datagram.len(),
        });
    };
    let code = Code::from_u8(code).ok_or(DecodeError::UnknownCode(code))?;
    let len = usize::from(length);
    if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&len) {
        return Err(DecodeError::LengthOutOfRange(length));
    }
    // Everything past Length is padding (RFC 2865 §3) and is never looked at.
    let body_len = len.saturating_sub(HEADER_LEN);
    let mut body = r.sub(body_len).ok_or(DecodeError::LengthExceedsDatagram {
        length,
        datagram: datagram.len(),
    })?;

    let mut attributes = Vec::new();
    while body.any_left() {
        let offset = HEADER_LEN.saturating_add(body.used());
        if attributes.len() >= MAX_ATTRIBUTES {
            return Err(DecodeError::TooManyAttributes);
        }
        let (Some(typ), Some(attr_len)) = (body.u8(), body.u8()) else {
            return Err(DecodeError::AttributeOverrun { offset });
        };
        if typ == 0 {
            return Err(DecodeError::AttributeTypeZero { offset });
        }
        let value_len =
            usize::from(attr_len)
                .checked_sub(2)
                .ok_or(DecodeError::AttributeTooShort {
                    offset,
                    length: attr_len,
                })?;
        let value = body
            .take(value_len)
            .ok_or(DecodeError::AttributeOverrun { offset })?;
        attributes.push(Attribute {
            typ,
            value: value.to_vec(),
        });
    }
    Ok(Packet {
        code,
        identifier,
        authenticator,
        attributes,
    })
}

/// Encodes a packet, computing the Length field. Authenticators are written
/// as given; the signing functions of this crate fill them in.
///
/// # Errors
///
/// [`EncodeError::AttributeTooLong`], [`EncodeError::TooManyAttributes`] or
/// [`EncodeError::PacketTooLong`].
pub fn encode(packet: &Packet) -> Result<Vec<u8>, EncodeError> {
    if packet.attributes.len() > MAX_ATTRIBUTES {
        return Err(EncodeError::TooManyAttributes);
    }
    if packet.attributes.iter().any(|a| a.typ == 0) {
        return Err(EncodeError::AttributeTypeZero);
    }
    if let Some(a) = packet
        .attributes
        .iter()
        .find(|a| a.value.len() > MAX_VALUE_LEN)
    {
        return Err(EncodeError::AttributeTooLong {
            typ: a.typ,
            len: a.value.len(),
        });
    }
    let len = packet.encoded_len();
    let length = u16::try_from(len)
        .ok()
        .filter(|_| len <= MAX_PACKET_LEN)
        .ok_or(EncodeError::PacketTooLong { len })?;
    let mut out = Vec::with_capacity(len);
    out.push(packet.code.to_u8());
    out.push(packet.identifier);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&packet.authenticator);
    for a in &packet.attributes {
        let attr_len = u8::try_from(a.value.len().saturating_add(2)).map_err(|_| {
            EncodeError::AttributeTooLong {
                typ: a.typ,
                len: a.value.len(),
            }
        })?;
        out.push(a.typ);
        out.push(attr_len);
        out.extend_from_slice(&a.value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{NAS_IP_ADDRESS, NAS_PORT, USER_NAME, USER_PASSWORD};
    use crate::testdata::RFC2865_ACCESS_REQUEST;

    fn header(code: u8, length: u16) -> Vec<u8> {
        let mut v = vec![code, 7];
        v.extend_from_slice(&length.to_be_bytes());
        v.extend_from_slice(&[0xAA; 16]);
        v
    }

    fn with_attrs(code: u8, attrs: &[u8]) -> Vec<u8> {
        let mut v = header(code, u16::try_from(20 + attrs.len()).unwrap());
        v.extend_from_slice(attrs);
        v
    }

    #[test]
    fn decodes_the_rfc_2865_example_and_encodes_it_back() {
        let p = decode(&RFC2865_ACCESS_REQUEST).unwrap();
        assert_eq!(p.code, Code::AccessRequest);
        assert_eq!(p.identifier, 0);
        assert_eq!(p.first(USER_NAME), Some(&b"nemo"[..]));
        assert_eq!(p.first(USER_PASSWORD).map(<[u8]>::len), Some(16));
        assert_eq!(p.first(NAS_IP_ADDRESS), Some(&[192, 168, 1, 16][..]));
        assert_eq!(p.first(NAS_PORT), Some(&[0, 0, 0, 3][..]));
        assert_eq!(encode(&p).unwrap(), RFC2865_ACCESS_REQUEST);
    }

    #[test]
    fn code_numbers_round_trip() {
        for n in 0..=255u8 {
            if let Some(code) = Code::from_u8(n) {
                assert_eq!(code.to_u8(), n);
            }
        }
        for (n, code) in [
            (1, Code::AccessRequest),
            (2, Code::AccessAccept),
            (3, Code::AccessReject),
        ] {
            assert_eq!(Code::from_u8(n), Some(code));
        }
        assert_eq!(Code::from_u8(11), Some(Code::AccessChallenge));
        assert_eq!(Code::from_u8(12), Some(Code::StatusServer));
        assert!(Code::StatusServer.is_request() && !Code::AccessAccept.is_request());
    }

    #[test]
    fn refuses_datagrams_shorter_than_the_header() {
        assert_eq!(decode(&[]), Err(DecodeError::TooShort { len: 0 }));
        assert_eq!(decode(&[1; 19]), Err(DecodeError::TooShort { len: 19 }));
    }

    #[test]
    fn refuses_unknown_codes_including_accounting() {
        for code in [0u8, 4, 5, 13, 40, 255] {
            assert_eq!(
                decode(&header(code, 20)),
                Err(DecodeError::UnknownCode(code))
            );
        }
    }

    #[test]
    fn refuses_length_field_out_of_range() {
        assert_eq!(
            decode(&header(1, 19)),
            Err(DecodeError::LengthOutOfRange(19))
        );
        assert_eq!(decode(&header(1, 0)), Err(DecodeError::LengthOutOfRange(0)));
        let mut big = header(1, 4097);
        big.resize(4097, 0);
        assert_eq!(decode(&big), Err(DecodeError::LengthOutOfRange(4097)));
    }

    #[test]
    fn refuses_length_field_beyond_the_datagram() {
        assert_eq!(
            decode(&header(1, 21)),
            Err(DecodeError::LengthExceedsDatagram {
                length: 21,
                datagram: 20
            })
        );
    }

    #[test]
    fn ignores_padding_past_the_length_field() {
        let mut v = with_attrs(1, &[1, 3, b'a']);
        let exact = decode(&v).unwrap();
        v.extend_from_slice(&[0xFF, 0x00, 0x01]);
        assert_eq!(decode(&v).unwrap(), exact);
    }

    #[test]
    fn refuses_attribute_length_0_and_1() {
        for bad in [0u8, 1] {
            assert_eq!(
                decode(&with_attrs(1, &[1, bad, 0, 0])),
                Err(DecodeError::AttributeTooShort {
                    offset: 20,
                    length: bad
                })
            );
        }
    }

    #[test]
    fn refuses_attribute_overruns() {
        // Length 5 but only 3 bytes of packet left.
        assert_eq!(
            decode(&with_attrs(1, &[1, 3, b'a', 1, 5, b'b'])),
            Err(DecodeError::AttributeOverrun { offset: 23 })
        );
        // A lone type byte at the end.
        assert_eq!(
            decode(&with_attrs(1, &[1, 2, 18])),
            Err(DecodeError::AttributeOverrun { offset: 22 })
        );
        // An attribute that fits the datagram but not the Length field.
        let mut v = with_attrs(1, &[1, 2]);
        v.extend_from_slice(&[1, 2]);
        v[3] = 23;
        assert_eq!(
            decode(&v),
            Err(DecodeError::AttributeOverrun { offset: 22 })
        );
    }

    #[test]
    fn refuses_attribute_type_0() {
        // A well-framed attribute of type 0 after a valid User-Name.
        assert_eq!(
            decode(&with_attrs(1, &[1, 3, b'a', 0, 4, 1, 2])),
            Err(DecodeError::AttributeTypeZero { offset: 23 })
        );
        assert_eq!(
            decode(&with_attrs(1, &[0, 2])),
            Err(DecodeError::AttributeTypeZero { offset: 20 })
        );
    }

    #[test]
    fn accepts_empty_attributes() {
        let p = decode(&with_attrs(1, &[24, 2])).unwrap();
        assert_eq!(p.first(24), Some(&[][..]));
    }

    #[test]
    fn attribute_count_is_capped() {
        let max: Vec<u8> = [18u8, 2].repeat(MAX_ATTRIBUTES);
        assert_eq!(
            decode(&with_attrs(1, &max)).unwrap().attributes.len(),
            MAX_ATTRIBUTES
        );
        let over: Vec<u8> = [18u8, 2].repeat(MAX_ATTRIBUTES + 1);
        assert_eq!(
            decode(&with_attrs(1, &over)),
            Err(DecodeError::TooManyAttributes)
        );
    }

    #[test]
    fn error_kinds_are_distinct() {
        let kinds = [
            DecodeError::TooShort { len: 0 }.kind(),
            DecodeError::UnknownCode(0).kind(),
            DecodeError::LengthOutOfRange(0).kind(),
            DecodeError::LengthExceedsDatagram {
                length: 0,
                datagram: 0,
            }
            .kind(),
            DecodeError::AttributeTooShort {
                offset: 0,
                length: 0,
            }
            .kind(),
            DecodeError::AttributeOverrun { offset: 0 }.kind(),
            DecodeError::TooManyAttributes.kind(),
            DecodeError::AttributeTypeZero { offset: 0 }.kind(),
        ];
        let set: std::collections::HashSet<_> = kinds.iter().collect();
        assert_eq!(set.len(), kinds.len());
    }

    fn packet(attributes: Vec<Attribute>) -> Packet {
        Packet {
            code: Code::AccessAccept,
            identifier: 42,
            authenticator: [3; 16],
            attributes,
        }
    }

    #[test]
    fn encode_refuses_what_decode_refuses() {
        let long = Attribute {
            typ: 18,
            value: vec![0; 254],
        };
        assert_eq!(
            encode(&packet(vec![long])),
            Err(EncodeError::AttributeTooLong { typ: 18, len: 254 })
        );
        let many = vec![
            Attribute {
                typ: 18,
                value: vec![]
            };
            MAX_ATTRIBUTES + 1
        ];
        assert_eq!(encode(&packet(many)), Err(EncodeError::TooManyAttributes));
        // 17 attributes of 255 bytes: 20 + 4335 > 4096.
        let big = vec![
            Attribute {
                typ: 18,
                value: vec![0; 253]
            };
            17
        ];
        assert_eq!(
            encode(&packet(big)),
            Err(EncodeError::PacketTooLong { len: 4355 })
        );
        let zero = Attribute {
            typ: 0,
            value: vec![1],
        };
        assert_eq!(
            encode(&packet(vec![zero])),
            Err(EncodeError::AttributeTypeZero)
        );
    }

    #[test]
    fn round_trips_a_packet_of_the_maximum_size() {
        let mut attrs = vec![
            Attribute {
                typ: 26,
                value: vec![9; 253]
            };
            16
        ];
        // 20 + 16 * 255 = 4100; trim the last value to land on 4096 exactly.
        if let Some(last) = attrs.last_mut() {
            last.value.truncate(249);
        }
        let p = packet(attrs);
        let bytes = encode(&p).unwrap();
        assert_eq!(bytes.len(), MAX_PACKET_LEN);
        assert_eq!(decode(&bytes).unwrap(), p);
    }

    #[test]
    fn round_trips_every_code() {
        for code in [
            Code::AccessRequest,
            Code::AccessAccept,
            Code::AccessReject,
            Code::AccessChallenge,
            Code::StatusServer,
        ] {
            let p = Packet {
                code,
                identifier: 200,
                authenticator: [0x5A; 16],
                attributes: vec![Attribute {
                    typ: 33,
                    value: b"ps".to_vec(),
                }],
            };
            assert_eq!(decode(&encode(&p).unwrap()).unwrap(), p);
        }
    }
}
