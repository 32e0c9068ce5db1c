//! The authorization area of a command: parsing the sessions (TPMS_AUTH_COMMAND)
//! with the reference implementation's checks and error numbering, checking
//! password (TPM_RS_PW) authorizations. Whether an HMAC or policy session is
//! loaded, and everything else about it, is checked in [`crate::authorize`].

use crate::defs::{handle, limits, rc, session_attr};
use crate::hash::Digest;
use crate::marshal::Reader;
use alloc::vec::Vec;

/// One parsed command session.
#[derive(Debug, Clone)]
pub struct Session<'a> {
    pub handle: u32,
    pub nonce: &'a [u8],
    pub attributes: u8,
    pub hmac: &'a [u8],
}

/// The decoration for session number `index` (0-based).
pub fn session_rc(index: usize) -> u32 {
    rc::S + (index as u32 + 1) * rc::N1
}

/// Parses the whole session area `area` (its size already checked against the
/// command). Errors are fully decorated response codes.
pub fn parse_sessions<'a>(area: &'a [u8]) -> Result<Vec<Session<'a>>, u32> {
    let mut r = Reader::new(area);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let idx = out.len();
        if idx == limits::MAX_SESSION_NUM {
            return Err(rc::SIZE + session_rc(idx));
        }
        let dec = |e: u32| e + session_rc(idx);
        let h = r.u32().map_err(dec)?;
        let ht = handle::ht(h);
        if h != handle::RS_PW && ht != handle::HT_HMAC_SESSION && ht != handle::HT_POLICY_SESSION {
            return Err(dec(rc::VALUE));
        }
        let nonce = r.tpm2b(limits::TPMU_HA_SIZE).map_err(dec)?;
        let attributes = r.u8().map_err(dec)?;
        if attributes & session_attr::RESERVED != 0 {
            return Err(dec(rc::RESERVED_BITS));
        }
        let hmac = r.tpm2b(limits::TPMU_HA_SIZE).map_err(dec)?;
        if h == handle::RS_PW {
            if attributes & !session_attr::CONTINUE_SESSION != 0 {
                return Err(dec(rc::ATTRIBUTES));
            }
            if !nonce.is_empty() {
                return Err(dec(rc::NONCE));
            }
        }
        out.push(Session {
            handle: h,
            nonce,
            attributes,
            hmac,
        });
    }
    Ok(out)
}

/// A password with its trailing zero bytes removed (Part 1, password authorization).
pub fn strip_trailing_zeros(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
    &b[..end]
}

/// Constant-time comparison of a presented password with an entity's authValue.
pub fn password_matches(presented: &[u8], auth: &Digest) -> bool {
    let p = strip_trailing_zeros(presented);
    let a = auth.as_bytes();
    if p.len() != a.len() {
        return false;
    }
    p.iter().zip(a).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marshal::Writer;

    fn pw(attrs: u8, nonce: &[u8], pass: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(handle::RS_PW).tpm2b(nonce).u8(attrs).tpm2b(pass);
        w.buf
    }

    #[test]
    fn parses_password_sessions() {
        let mut a = pw(1, &[], b"x");
        a.extend(pw(0, &[], b""));
        let s = parse_sessions(&a).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].hmac, b"x");
    }

    #[test]
    fn session_errors_are_numbered() {
        assert_eq!(
            parse_sessions(&pw(0x08, &[], b"")).unwrap_err(),
            rc::RESERVED_BITS + rc::S + rc::N1
        );
        assert_eq!(
            parse_sessions(&pw(0x20, &[], b"")).unwrap_err(),
            rc::ATTRIBUTES + rc::S + rc::N1
        );
        let mut two = pw(0, &[], b"");
        two.extend(pw(0, &[1], b""));
        assert_eq!(
            parse_sessions(&two).unwrap_err(),
            rc::NONCE + rc::S + 2 * rc::N1
        );
        let mut bad = pw(0, &[], b"");
        bad[0] = 0x80;
        assert_eq!(
            parse_sessions(&bad).unwrap_err(),
            rc::VALUE + rc::S + rc::N1
        );
        bad[0] = 0x02;
        assert_eq!(parse_sessions(&bad).unwrap()[0].handle, 0x0200_0009);
        let short = &pw(0, &[], b"abc")[..10];
        assert_eq!(
            parse_sessions(short).unwrap_err(),
            rc::INSUFFICIENT + rc::S + rc::N1
        );
        let four: Vec<u8> = (0..4).flat_map(|_| pw(0, &[], b"")).collect();
        assert_eq!(
            parse_sessions(&four).unwrap_err(),
            rc::SIZE + rc::S + 4 * rc::N1
        );
    }

    #[test]
    fn passwords_ignore_trailing_zeros() {
        let a = Digest::from_slice(b"pw");
        assert!(password_matches(b"pw\0\0", &a));
        assert!(!password_matches(b"pw1", &a));
        assert!(password_matches(b"\0", &Digest::filled(0, 0)));
    }
}
