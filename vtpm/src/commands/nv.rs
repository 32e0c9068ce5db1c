//! Part 3 §31: NV indices — NV_DefineSpace, NV_UndefineSpace, NV_ReadPublic,
//! NV_Write, NV_Read, NV_Increment, NV_Extend, NV_SetBits, NV_WriteLock and
//! NV_ReadLock — kept in the NV image (every change is committed before the
//! response).

use crate::defs::{handle, limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::Digest;
use crate::marshal::Reader;
use crate::nvindex::{self, nva, NvAuthBy, NvIndex, NvPublic};

/// NV response codes.
pub(crate) mod nvrc {
    use crate::defs::rc::VER1;
    pub const NV_RANGE: u32 = VER1 + 0x046;
    pub const NV_LOCKED: u32 = VER1 + 0x048;
    pub const NV_AUTHORIZATION: u32 = VER1 + 0x049;
    pub const NV_UNINITIALIZED: u32 = VER1 + 0x04A;
}

impl Tpm {
    /// The defined NV index `h`.
    pub(crate) fn nv_index(&self, h: u32) -> Option<&NvIndex> {
        self.p.nv_indices.iter().find(|i| i.public.index == h)
    }

    fn nv_index_mut(&mut self, h: u32) -> Option<&mut NvIndex> {
        self.p.nv_indices.iter_mut().find(|i| i.public.index == h)
    }

    /// Startup(CLEAR) (TPM Reset or Restart): WRITE_STCLEAR write locks,
    /// TPM2_NV_GlobalWriteLock's locks of GLOBALLOCK indices and READ_STCLEAR
    /// read locks end (a written WRITEDEFINE index stays locked);
    /// CLEAR_STCLEAR indices become unwritten.
    pub(crate) fn nv_startup_clear(&mut self) {
        for i in &mut self.p.nv_indices {
            let a = &mut i.public.attributes;
            if *a & (nva::WRITE_STCLEAR | nva::GLOBALLOCK) != 0
                && !(*a & nva::WRITEDEFINE != 0 && *a & nva::WRITTEN != 0)
            {
                *a &= !nva::WRITELOCKED;
            }
            if *a & nva::READ_STCLEAR != 0 {
                *a &= !nva::READLOCKED;
            }
            if *a & nva::CLEAR_STCLEAR != 0 {
                *a &= !nva::WRITTEN;
            }
        }
    }
}

/// How `auth` (the authorization handle) gained access to index `idx`.
fn auth_by(cmd: &Cmd, auth: u32, idx: u32) -> NvAuthBy {
    auth_by_at(cmd, 0, auth, idx)
}

/// [`auth_by`] for an authorization handle at handle position `ai`.
fn auth_by_at(cmd: &Cmd, ai: usize, auth: u32, idx: u32) -> NvAuthBy {
    match auth {
        handle::OWNER => NvAuthBy::Owner,
        handle::PLATFORM => NvAuthBy::Platform,
        _ if auth == idx && cmd.policy_auth[ai] => NvAuthBy::IndexPolicy,
        _ => NvAuthBy::IndexAuth,
    }
}

/// The index the command addresses (handle 2), checked for write access.
fn writable<'a>(tpm: &'a mut Tpm, cmd: &Cmd) -> Result<&'a mut NvIndex, u32> {
    let (auth, h) = (cmd.handles[0], cmd.handles[1]);
    let by = auth_by(cmd, auth, h);
    let i = tpm.nv_index_mut(h).ok_or(rc::HANDLE + rc::H + 2 * rc::N1)?;
    if auth != h && !matches!(auth, handle::OWNER | handle::PLATFORM) {
        return Err(nvrc::NV_AUTHORIZATION);
    }
    if !nvindex::access_allowed(&i.public, by, true) {
        return Err(nvrc::NV_AUTHORIZATION);
    }
    if i.public.has(nva::WRITELOCKED) {
        return Err(nvrc::NV_LOCKED);
    }
    Ok(i)
}

pub fn nv_define_space(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let auth = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let public = NvPublic::unmarshal_2b(&mut cmd.params).p(2)?;
    cmd.finish()?;
    public
        .validate(cmd.handles[0] == handle::PLATFORM)
        .map_err(|e| rc::safe_add(e, rc::P + 2 * rc::N1))?;
    let auth = crate::auth::strip_trailing_zeros(auth);
    if auth.len() > public.name_alg.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    if tpm.nv_index(public.index).is_some() {
        return Err(rc::NV_DEFINED);
    }
    let used: usize = tpm.p.nv_indices.iter().map(|i| i.data.len()).sum();
    if tpm.p.nv_indices.len() >= nvindex::MAX_NV_INDICES
        || used + public.data_size as usize > limits::NV_DATA_BUDGET
    {
        return Err(rc::NV_SPACE);
    }
    let size = public.data_size as usize;
    tpm.p.nv_indices.push(NvIndex {
        public,
        auth: Digest::from_slice(auth),
        data: alloc::vec![0; size],
    });
    tpm.p.nv_indices.sort_by_key(|i| i.public.index);
    cmd.nv_dirty = true;
    Ok(())
}

pub fn nv_undefine_space(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let (auth, h) = (cmd.handles[0], cmd.handles[1]);
    let i = tpm.nv_index(h).ok_or(rc::HANDLE + rc::H + 2 * rc::N1)?;
    // An index with TPMA_NV_POLICY_DELETE goes only through
    // TPM2_NV_UndefineSpaceSpecial.
    if i.public.has(nva::POLICY_DELETE) {
        return Err(rc::ATTRIBUTES + rc::H + 2 * rc::N1);
    }
    // The owner cannot delete the platform's indices.
    if auth == handle::OWNER && i.public.has(nva::PLATFORMCREATE) {
        return Err(nvrc::NV_AUTHORIZATION);
    }
    tpm.p.nv_indices.retain(|i| i.public.index != h);
    cmd.nv_dirty = true;
    Ok(())
}

pub fn nv_read_public(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let i = tpm
        .nv_index(cmd.handles[0])
        .ok_or(rc::HANDLE + rc::H + rc::N1)?;
    let mut w = crate::marshal::Writer::new();
    w.tpm2b(&i.public.marshal());
    cmd.out.bytes(&w.buf).tpm2b(&i.public.name());
    Ok(())
}

pub fn nv_write(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(1)?;
    let offset = cmd.params.u16().p(2)? as usize;
    cmd.finish()?;
    let i = writable(tpm, cmd)?;
    if i.public.nt() != nva::NT_ORDINARY {
        return Err(rc::ATTRIBUTES + rc::H + 2 * rc::N1);
    }
    let end = offset + data.len();
    if end > i.data.len() {
        return Err(nvrc::NV_RANGE);
    }
    if i.public.has(nva::WRITEALL) && data.len() != i.data.len() {
        return Err(nvrc::NV_RANGE);
    }
    i.data[offset..end].copy_from_slice(data);
    i.public.attributes |= nva::WRITTEN;
    cmd.nv_dirty = true;
    Ok(())
}

pub fn nv_increment(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let max = tpm.p.nv_max_counter;
    let i = writable(tpm, cmd)?;
    if i.public.nt() != nva::NT_COUNTER {
        return Err(rc::ATTRIBUTES + rc::H + 2 * rc::N1);
    }
    // A new counter starts above every count any counter has had.
    let old = if i.public.has(nva::WRITTEN) {
        i.value_u64()
    } else {
        max
    };
    let new = old.checked_add(1).ok_or(nvrc::NV_RANGE)?;
    i.data.copy_from_slice(&new.to_be_bytes());
    i.public.attributes |= nva::WRITTEN;
    tpm.p.nv_max_counter = max.max(new);
    cmd.nv_dirty = true;
    Ok(())
}

pub fn nv_extend(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(1)?;
    cmd.finish()?;
    let i = writable(tpm, cmd)?;
    if i.public.nt() != nva::NT_EXTEND {
        return Err(rc::ATTRIBUTES + rc::H + 2 * rc::N1);
    }
    let h = i.public.name_alg;
    let d = h.digest(&[&i.data, data]);
    i.data.copy_from_slice(d.as_bytes());
    i.public.attributes |= nva::WRITTEN;
    cmd.nv_dirty = true;
    Ok(())
}

pub fn nv_set_bits(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let bits = cmd.params.u64().p(1)?;
    cmd.finish()?;
    let i = writable(tpm, cmd)?;
    if i.public.nt() != nva::NT_BITS {
        return Err(rc::ATTRIBUTES + rc::H + 2 * rc::N1);
    }
    let v = if i.public.has(nva::WRITTEN) {
        i.value_u64()
    } else {
        0
    } | bits;
    i.data.copy_from_slice(&v.to_be_bytes());
    i.public.attributes |= nva::WRITTEN;
    cmd.nv_dirty = true;
    Ok(())
}

pub fn nv_write_lock(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let (auth, h) = (cmd.handles[0], cmd.handles[1]);
    let by = auth_by(cmd, auth, h);
    let i = tpm.nv_index_mut(h).ok_or(rc::HANDLE + rc::H + 2 * rc::N1)?;
    if !nvindex::access_allowed(&i.public, by, true) {
        return Err(nvrc::NV_AUTHORIZATION);
    }
    if !i.public.has(nva::WRITEDEFINE | nva::WRITE_STCLEAR) {
        return Err(rc::ATTRIBUTES + rc::H + 2 * rc::N1);
    }
    if !i.public.has(nva::WRITELOCKED) {
        i.public.attributes |= nva::WRITELOCKED;
        cmd.nv_dirty = true;
    }
    Ok(())
}

/// Part 3 §31.13 TPM2_NV_GlobalWriteLock: every index with TPMA_NV_GLOBALLOCK
/// becomes write-locked until the next TPM2_Startup(CLEAR).
pub fn nv_global_write_lock(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    for i in &mut tpm.p.nv_indices {
        if i.public.has(nva::GLOBALLOCK) && !i.public.has(nva::WRITELOCKED) {
            i.public.attributes |= nva::WRITELOCKED;
            cmd.nv_dirty = true;
        }
    }
    Ok(())
}

/// The index addressed by handle 2, checked for read access.
fn readable<'a>(tpm: &'a mut Tpm, cmd: &Cmd) -> Result<&'a mut NvIndex, u32> {
    readable_at(tpm, cmd, 0)
}

/// The index addressed by handle `ai + 1`, checked for read access by the
/// authorization handle `ai`.
fn readable_at<'a>(tpm: &'a mut Tpm, cmd: &Cmd, ai: usize) -> Result<&'a mut NvIndex, u32> {
    let (auth, h) = (cmd.handles[ai], cmd.handles[ai + 1]);
    let by = auth_by_at(cmd, ai, auth, h);
    let i = tpm
        .nv_index_mut(h)
        .ok_or(rc::HANDLE + rc::H + (ai as u32 + 2) * rc::N1)?;
    if auth != h && !matches!(auth, handle::OWNER | handle::PLATFORM) {
        return Err(nvrc::NV_AUTHORIZATION);
    }
    if !nvindex::access_allowed(&i.public, by, false) {
        return Err(nvrc::NV_AUTHORIZATION);
    }
    Ok(i)
}

pub fn nv_read(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let size = cmd.params.u16().p(1)? as usize;
    let offset = cmd.params.u16().p(2)? as usize;
    cmd.finish()?;
    let i = readable(tpm, cmd)?;
    if i.public.has(nva::READLOCKED) {
        return Err(nvrc::NV_LOCKED);
    }
    if !i.public.has(nva::WRITTEN) {
        return Err(nvrc::NV_UNINITIALIZED);
    }
    if size > limits::MAX_BUFFER || offset + size > i.data.len() {
        return Err(nvrc::NV_RANGE);
    }
    let data = i.data[offset..offset + size].to_vec();
    cmd.out.tpm2b(&data);
    Ok(())
}

pub fn nv_read_lock(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let i = readable(tpm, cmd)?;
    if !i.public.has(nva::READ_STCLEAR) {
        return Err(rc::ATTRIBUTES + rc::H + 2 * rc::N1);
    }
    // The read lock lives until the next Startup(CLEAR); it is kept in the
    // image's index attributes, which Shutdown/Startup preserve.
    i.public.attributes |= nva::READLOCKED;
    cmd.nv_dirty = true;
    Ok(())
}

/// Part 3 §31.11 TPM2_NV_ChangeAuth: a new authValue for the index (ADMIN
/// role: only a policy session naming this command authorizes it).
pub fn nv_change_auth(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let new_auth = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    cmd.finish()?;
    let i = tpm
        .nv_index_mut(cmd.handles[0])
        .ok_or(rc::HANDLE + rc::H + rc::N1)?;
    let a = crate::auth::strip_trailing_zeros(new_auth);
    if a.len() > i.public.name_alg.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    i.auth = Digest::from_slice(a);
    cmd.nv_dirty = true;
    Ok(())
}

/// The data of the index of handle 2, read for a policy command
/// (TPM2_PolicyNV, TPM2_PolicyAuthorizeNV) authorized by handle 1: the read
/// access, lock and written checks of TPM2_NV_Read.
pub(crate) fn read_for_policy(tpm: &mut Tpm, cmd: &Cmd) -> Result<alloc::vec::Vec<u8>, u32> {
    read_checked(tpm, cmd, 0)
}

/// The data of the index of handle `ai + 1` read with the authorization of
/// handle `ai` (read access, lock and written checks of TPM2_NV_Read).
pub(crate) fn read_checked(
    tpm: &mut Tpm,
    cmd: &Cmd,
    ai: usize,
) -> Result<alloc::vec::Vec<u8>, u32> {
    let i = readable_at(tpm, cmd, ai)?;
    if i.public.has(nva::READLOCKED) {
        return Err(nvrc::NV_LOCKED);
    }
    if !i.public.has(nva::WRITTEN) {
        return Err(nvrc::NV_UNINITIALIZED);
    }
    Ok(i.data.clone())
}

/// Part 3 §31.4 TPM2_NV_UndefineSpaceSpecial: an index with
/// TPMA_NV_POLICY_DELETE is deleted with its policy (ADMIN role: a policy
/// session naming this command) and platformAuth.
pub fn nv_undefine_space_special(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let h = cmd.handles[0];
    let i = tpm.nv_index(h).ok_or(rc::HANDLE + rc::H + rc::N1)?;
    if !i.public.has(nva::POLICY_DELETE) {
        return Err(rc::ATTRIBUTES + rc::H + rc::N1);
    }
    tpm.p.nv_indices.retain(|i| i.public.index != h);
    cmd.nv_dirty = true;
    Ok(())
}

/// An NV index record of the image (for [`crate::nv`]).
pub fn decode_index(r: &mut Reader) -> Option<NvIndex> {
    NvIndex::decode(r)
}

#[cfg(test)]
mod tests {
    use crate::defs::{cc, handle, rc, su};
    use crate::marshal::{Reader, Writer};
    use crate::nvindex::nva;
    use crate::tests::{command, new_tpm, params_of, rc_of, startup, SharedNv, TestClock};

    const IDX: u32 = 0x0150_0001;

    fn define(t: &mut crate::Tpm, index: u32, attrs: u32, size: u16, auth: &[u8]) -> u32 {
        let mut pubw = Writer::new();
        pubw.u32(index).u16(0x000B).u32(attrs).tpm2b(&[]).u16(size);
        let mut w = Writer::new();
        w.tpm2b(auth).tpm2b(&pubw.buf);
        rc_of(&t.execute(
            0,
            &command(cc::NV_DEFINE_SPACE, &[handle::OWNER], &[b""], &w.buf),
        ))
    }

    #[test]
    fn ordinary_index_write_read_and_persistence() {
        let nv = SharedNv::default();
        let clock = TestClock::default();
        let mut t = new_tpm(&nv, &clock);
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        let attrs = nva::OWNERWRITE | nva::OWNERREAD | nva::AUTHREAD | nva::AUTHWRITE;
        assert_eq!(define(&mut t, IDX, attrs, 16, b"ip"), 0);
        assert_eq!(define(&mut t, IDX, attrs, 16, b"ip"), rc::NV_DEFINED);
        let read = |t: &mut crate::Tpm, auth: u32, pw: &[u8], size: u16, off: u16| {
            let mut w = Writer::new();
            w.u16(size).u16(off);
            t.execute(0, &command(cc::NV_READ, &[auth, IDX], &[pw], &w.buf))
        };
        assert_eq!(
            rc_of(&read(&mut t, handle::OWNER, b"", 4, 0)),
            super::nvrc::NV_UNINITIALIZED
        );
        let mut w = Writer::new();
        w.tpm2b(b"0123456789").u16(2);
        let wr = command(cc::NV_WRITE, &[IDX, IDX], &[b"ip"], &w.buf);
        assert_eq!(rc_of(&t.execute(0, &wr)), 0);
        let r = read(&mut t, IDX, b"ip", 4, 2);
        assert_eq!(Reader::new(params_of(&r)).tpm2b(64).unwrap(), b"0123");
        assert_eq!(
            rc_of(&read(&mut t, IDX, b"no", 4, 2)),
            rc::AUTH_FAIL + rc::S + rc::N1
        );
        assert_eq!(
            rc_of(&read(&mut t, handle::OWNER, b"", 8, 10)),
            super::nvrc::NV_RANGE
        );
        assert_eq!(
            rc_of(&read(&mut t, handle::PLATFORM, b"", 4, 0)),
            super::nvrc::NV_AUTHORIZATION
        );
        // A new TPM on the same NV image still has the index and its data.
        drop(t);
        let mut t = new_tpm(&nv, &clock);
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        let r = read(&mut t, handle::OWNER, b"", 10, 2);
        assert_eq!(Reader::new(params_of(&r)).tpm2b(64).unwrap(), b"0123456789");
        let u = command(cc::NV_UNDEFINE_SPACE, &[handle::OWNER, IDX], &[b""], &[]);
        assert_eq!(rc_of(&t.execute(0, &u)), 0);
        assert_eq!(
            rc_of(&read(&mut t, handle::OWNER, b"", 4, 0)),
            rc::HANDLE + rc::H + 2 * rc::N1
        );
    }

    #[test]
    fn counters_bits_and_extend_indices() {
        let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        let base = nva::OWNERWRITE | nva::OWNERREAD;
        assert_eq!(
            define(
                &mut t,
                IDX,
                base | nva::NT_COUNTER << nva::TYPE_SHIFT,
                8,
                b""
            ),
            0
        );
        assert_eq!(
            define(
                &mut t,
                IDX + 1,
                base | nva::NT_BITS << nva::TYPE_SHIFT,
                8,
                b""
            ),
            0
        );
        assert_eq!(
            define(
                &mut t,
                IDX + 2,
                base | nva::NT_EXTEND << nva::TYPE_SHIFT,
                32,
                b""
            ),
            0
        );
        let inc = command(cc::NV_INCREMENT, &[handle::OWNER, IDX], &[b""], &[]);
        for _ in 0..3 {
            assert_eq!(rc_of(&t.execute(0, &inc)), 0);
        }
        assert_eq!(t.nv_index(IDX).unwrap().value_u64(), 3);
        let bits = command(
            cc::NV_SET_BITS,
            &[handle::OWNER, IDX + 1],
            &[b""],
            &0x81u64.to_be_bytes(),
        );
        assert_eq!(rc_of(&t.execute(0, &bits)), 0);
        assert_eq!(t.nv_index(IDX + 1).unwrap().value_u64(), 0x81);
        let mut w = Writer::new();
        w.tpm2b(b"ev");
        let ext = command(cc::NV_EXTEND, &[handle::OWNER, IDX + 2], &[b""], &w.buf);
        assert_eq!(rc_of(&t.execute(0, &ext)), 0);
        let want = crate::hash::HashAlg::Sha256.digest(&[&[0u8; 32], b"ev"]);
        assert_eq!(t.nv_index(IDX + 2).unwrap().data, want.as_bytes());
        // Type mismatches.
        let wrong = command(cc::NV_INCREMENT, &[handle::OWNER, IDX + 1], &[b""], &[]);
        assert_eq!(
            rc_of(&t.execute(0, &wrong)),
            rc::ATTRIBUTES + rc::H + 2 * rc::N1
        );
        // A counter of the wrong size cannot be defined.
        assert_eq!(
            define(
                &mut t,
                IDX + 3,
                base | nva::NT_COUNTER << nva::TYPE_SHIFT,
                4,
                b""
            ),
            rc::SIZE + rc::P + 2 * rc::N1
        );
    }

    #[test]
    fn a_flood_of_nv_increment_gets_nv_rate_until_time_passes() {
        use crate::nvrate::{NV_WRITE_BURST, NV_WRITE_INTERVAL_MS};
        use core::sync::atomic::Ordering;
        let nv = SharedNv::default();
        let clock = TestClock::default();
        let mut t = new_tpm(&nv, &clock);
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        let counter = nva::OWNERWRITE | nva::OWNERREAD | nva::NT_COUNTER << nva::TYPE_SHIFT;
        assert_eq!(define(&mut t, IDX, counter, 8, b""), 0);
        let inc = command(cc::NV_INCREMENT, &[handle::OWNER, IDX], &[b""], &[]);
        // Startup's and DefineSpace's writes came out of the same budget.
        let mut accepted = 0u64;
        while rc_of(&t.execute(0, &inc)) == 0 {
            accepted += 1;
            assert!(accepted <= u64::from(NV_WRITE_BURST), "no limit");
        }
        assert_eq!(accepted, u64::from(NV_WRITE_BURST) - 2);
        let writes = nv.0.lock().unwrap().writes;
        // Refused: the counter did not move and NV was not written.
        assert_eq!(rc_of(&t.execute(0, &inc)), rc::NV_RATE);
        assert_eq!(t.nv_index(IDX).unwrap().value_u64(), accepted);
        assert_eq!(nv.0.lock().unwrap().writes, writes);
        // Reads still work, and so does a command that does not write NV.
        let mut w = Writer::new();
        w.u16(8).u16(0);
        let read = command(cc::NV_READ, &[handle::OWNER, IDX], &[b""], &w.buf);
        assert_eq!(rc_of(&t.execute(0, &read)), 0);
        // Time passes: one interval earns one write.
        clock.0.fetch_add(NV_WRITE_INTERVAL_MS, Ordering::Relaxed);
        assert_eq!(rc_of(&t.execute(0, &inc)), 0);
        assert_eq!(t.nv_index(IDX).unwrap().value_u64(), accepted + 1);
        assert_eq!(rc_of(&t.execute(0, &inc)), rc::NV_RATE);
        // Shutdown is never refused, even with the budget spent.
        let sd = command(cc::SHUTDOWN, &[], &[], &su::CLEAR.to_be_bytes());
        assert_eq!(rc_of(&t.execute(0, &sd)), 0);
    }
}
