//! Command authorization and the response session area (Part 1 §19, the
//! reference implementation's SessionProcess order): binding sessions to the
//! handles that need authorization, password / HMAC / policy checks with
//! dictionary-attack effects on lockoutAuth, decryption of the first command
//! parameter, and — on success — rolling nonceTPM, encrypting the first response
//! parameter and computing the response HMACs.

use crate::auth::{self, Session};
use crate::defs::{handle, rc, session_attr as sa};
use crate::dispatch::{AuthRole, CommandDesc};
use crate::engine::Tpm;
use crate::hash::{Digest, HashAlg};
use crate::marshal::Writer;
use crate::session::{ct_eq, session_hmac, AuthSession, SessionKind};
use alloc::vec::Vec;

/// How one command session is used.
#[derive(Debug, Clone)]
pub struct SessionUse {
    pub handle: u32,
    pub nonce_caller: Vec<u8>,
    pub attributes: u8,
    /// The HMAC (or password) the caller presented.
    pub hmac: Vec<u8>,
    /// The handle this session authorizes, if any.
    pub associated: Option<u32>,
    /// The entity's authValue is part of the HMAC key.
    pub include_auth: bool,
    /// The role in which the session authorizes `associated`.
    pub role: AuthRole,
}

/// The authorization area of a command, checked.
#[derive(Debug, Clone, Default)]
pub struct AuthArea {
    pub uses: Vec<SessionUse>,
    pub decrypt: Option<usize>,
    pub encrypt: Option<usize>,
    /// The audit session and the command's cpHash in its hash (over the
    /// parameters as received).
    pub audit: Option<(usize, Digest)>,
}

/// cpHash := H(commandCode || Name(handle)... || parameters).
pub fn cp_hash(h: HashAlg, code: u32, names: &[Vec<u8>], params: &[u8]) -> Digest {
    let cc = code.to_be_bytes();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(names.len() + 2);
    parts.push(&cc);
    parts.extend(names.iter().map(|n| n.as_slice()));
    parts.push(params);
    h.digest(&parts)
}

/// rpHash := H(TPM_RC_SUCCESS || commandCode || parameters).
pub fn rp_hash(h: HashAlg, code: u32, params: &[u8]) -> Digest {
    h.digest(&[&0u32.to_be_bytes(), &code.to_be_bytes(), params])
}

use crate::commands::platform::RC_PP;

/// TPM_RC_EXCLUSIVE: the audit session is not the exclusive one.
const RC_EXCLUSIVE: u32 = rc::VER1 + 0x021;

/// What a policy session is checked against: the command.
struct PolicyContext<'a> {
    code: u32,
    locality: u8,
    cp: &'a Digest,
    /// Names of the command's handles.
    names: &'a [Vec<u8>],
    /// The command's parameters as received.
    params: &'a [u8],
}

impl Tpm {
    /// TPM time in milliseconds since the last _TPM_Init.
    pub(crate) fn tpm_time(&self) -> u64 {
        self.v.clock_rate.elapsed_at(self.time.now_ms())
    }

    /// The Name of an entity: the handle for PCRs, permanent handles and
    /// sessions; empty for a sequence object (it has no public area).
    pub(crate) fn entity_name(&self, h: u32) -> Vec<u8> {
        match self.v.objects.get(h) {
            Some(crate::object::Object::Sequence(_)) => Vec::new(),
            Some(crate::object::Object::Key(k)) => k.name.clone(),
            None => match self.nv_index(h) {
                Some(i) => i.public.name(),
                None => h.to_be_bytes().to_vec(),
            },
        }
    }

    /// The authPolicy of an entity and its hash, if it has one.
    pub(crate) fn auth_policy(&self, h: u32) -> Option<(HashAlg, Digest)> {
        match h {
            handle::OWNER => self.p.owner_policy,
            handle::ENDORSEMENT => self.p.endorsement_policy,
            handle::LOCKOUT => self.p.lockout_policy,
            handle::PLATFORM => self.v.platform_policy,
            _ if (h as usize) < crate::defs::limits::PCR_COUNT => {
                if crate::pcr::in_group(crate::pcr::POLICY_GROUP, h as usize) {
                    self.p.pcr_policy
                } else {
                    None
                }
            }
            _ if self.key(h).is_some() => self.key(h).and_then(|k| {
                (!k.public.auth_policy.is_empty())
                    .then(|| (k.public.name_alg, Digest::from_slice(&k.public.auth_policy)))
            }),
            _ => self.nv_index(h).and_then(|i| {
                (!i.public.auth_policy.is_empty())
                    .then(|| (i.public.name_alg, Digest::from_slice(&i.public.auth_policy)))
            }),
        }
    }

    /// IsAuthValueAvailable: an object's authValue may be used (password or
    /// HMAC) in the USER role when it has userWithAuth, in the ADMIN role when
    /// its adminWithPolicy is clear.
    fn auth_value_available(&self, h: u32, role: AuthRole) -> bool {
        use crate::public::attr;
        self.key(h).is_none_or(|k| match role {
            AuthRole::Admin => !k.public.has(attr::ADMIN_WITH_POLICY),
            AuthRole::Dup => false,
            _ => k.public.has(attr::USER_WITH_AUTH),
        })
    }

    /// IsPolicySessionRequired: the DUP role always needs a policy session,
    /// the ADMIN role too except for an object whose adminWithPolicy is clear.
    fn policy_session_required(&self, h: u32, role: AuthRole) -> bool {
        match role {
            AuthRole::Dup => true,
            AuthRole::Admin => self
                .key(h)
                .is_none_or(|k| k.public.has(crate::public::attr::ADMIN_WITH_POLICY)),
            _ => false,
        }
    }

    /// Is `h` protected against dictionary attacks (an object without noDA)?
    fn da_protected(&self, h: u32) -> bool {
        self.v.objects.get(h).is_some_and(|o| o.da_protected())
            || self
                .nv_index(h)
                .is_some_and(|i| !i.public.has(crate::nvindex::nva::NO_DA))
    }

    /// TPM_RC_LOCKOUT if `h`'s authValue may not be tried now: lockoutAuth
    /// after a failure, DA-protected objects after MAX_AUTH_FAIL failures (one
    /// failure is forgiven per TPM_PT_LOCKOUT_INTERVAL).
    fn check_da(&mut self, h: u32) -> Result<(), u32> {
        let now = self.tpm_time();
        if h == handle::LOCKOUT {
            let recovery = u64::from(self.p.da.lockout_recovery) * 1000;
            if !self.v.lockout_auth_enabled
                && recovery != 0
                && now.saturating_sub(self.v.lockout_failed_at) >= recovery
            {
                self.v.lockout_auth_enabled = true;
            }
            return if self.v.lockout_auth_enabled {
                Ok(())
            } else {
                Err(rc::LOCKOUT)
            };
        }
        // recoveryTime 0 disables DA protection.
        if !self.da_protected(h) || self.p.da.recovery_time == 0 {
            return Ok(());
        }
        self.da_heal(now);
        if self.v.failed_tries >= self.p.da.max_tries {
            return Err(rc::LOCKOUT);
        }
        Ok(())
    }

    /// Forgives one failure per elapsed recoveryTime.
    fn da_heal(&mut self, now: u64) {
        let interval = u64::from(self.p.da.recovery_time) * 1000;
        if interval == 0 || self.v.failed_tries == 0 {
            return;
        }
        let healed = now.saturating_sub(self.v.last_auth_failure) / interval;
        if healed > 0 {
            self.v.failed_tries = self
                .v
                .failed_tries
                .saturating_sub(healed.min(u64::from(u32::MAX)) as u32);
            self.v.last_auth_failure = now;
        }
    }

    /// A failed authorization of `h` (the reference implementation's
    /// IncrementLockout): a session bound to lockoutAuth or to a DA-protected
    /// entity always counts; otherwise only a DA-protected entity whose
    /// authValue was used does. lockoutAuth is then locked out, anything else
    /// counts a failure (AUTH_FAIL); uncounted failures are BAD_AUTH.
    fn auth_failed(
        &mut self,
        h: Option<u32>,
        index: usize,
        session: Option<(&AuthSession, bool)>,
    ) -> u32 {
        log::warn!("vtpm: authorization of {h:x?} failed in session {index}");
        let mut target = h;
        let counted = match session {
            None => h.is_some_and(|h| h == handle::LOCKOUT || self.da_protected(h)),
            Some((s, include_auth)) => {
                if s.lockout_bound {
                    target = Some(handle::LOCKOUT);
                }
                let exempt = !target.is_some_and(|h| h == handle::LOCKOUT || self.da_protected(h));
                s.da_bound || s.lockout_bound || (!exempt && include_auth)
            }
        };
        if !counted {
            return rc::BAD_AUTH + auth::session_rc(index);
        }
        if target == Some(handle::LOCKOUT) {
            self.v.lockout_auth_enabled = false;
            self.v.lockout_failed_at = self.tpm_time();
        } else if self.p.da.recovery_time == 0 {
            return rc::BAD_AUTH + auth::session_rc(index);
        } else {
            self.v.failed_tries = self.v.failed_tries.saturating_add(1);
            self.v.last_auth_failure = self.tpm_time();
        }
        rc::AUTH_FAIL + auth::session_rc(index)
    }

    /// Checks the authorization area of a command whose handles are `handles`
    /// and whose parameter bytes (as received) are `params`; decrypts the first
    /// parameter in place when a session asks for it.
    pub(crate) fn authorize(
        &mut self,
        locality: u8,
        desc: &CommandDesc,
        handles: &[u32; 3],
        parsed: &[Session],
        params: &mut [u8],
    ) -> Result<AuthArea, u32> {
        let mut area = AuthArea::default();
        // Session-level checks (RetrieveSessionData).
        for (i, s) in parsed.iter().enumerate() {
            let dec = auth::session_rc(i);
            if s.handle != handle::RS_PW {
                let sess = self
                    .v
                    .sessions
                    .get(s.handle)
                    .ok_or(rc::REFERENCE_S0 + i as u32)?;
                if parsed[..i].iter().any(|p| p.handle == s.handle) {
                    return Err(rc::HANDLE + dec);
                }
                let null_sym = sess.symmetric == crate::session::Symmetric::Null;
                if s.attributes & sa::DECRYPT != 0 {
                    if !desc.decrypt || area.decrypt.is_some() {
                        return Err(rc::ATTRIBUTES + dec);
                    }
                    if null_sym {
                        return Err(rc::SYMMETRIC + dec);
                    }
                    area.decrypt = Some(i);
                }
                if s.attributes & sa::ENCRYPT != 0 {
                    if !desc.encrypt || area.encrypt.is_some() {
                        return Err(rc::ATTRIBUTES + dec);
                    }
                    if null_sym {
                        return Err(rc::SYMMETRIC + dec);
                    }
                    area.encrypt = Some(i);
                }
                if s.attributes & sa::AUDIT != 0 {
                    // One audit session, an HMAC session; a session that
                    // asks to stay exclusive must be the exclusive one
                    // (unless it starts or restarts its audit).
                    if area.audit.is_some() || sess.kind.is_policy() {
                        return Err(rc::ATTRIBUTES + dec);
                    }
                    if s.attributes & sa::AUDIT_RESET == 0
                        && sess.audit.is_some()
                        && s.attributes & sa::AUDIT_EXCLUSIVE != 0
                        && self.v.exclusive_audit != Some(s.handle)
                    {
                        return Err(RC_EXCLUSIVE);
                    }
                    area.audit = Some((i, Digest::filled(0, 0)));
                } else if s.attributes & (sa::AUDIT_RESET | sa::AUDIT_EXCLUSIVE) != 0 {
                    return Err(rc::ATTRIBUTES + dec);
                }
            }
            area.uses.push(SessionUse {
                handle: s.handle,
                nonce_caller: s.nonce.to_vec(),
                attributes: s.attributes,
                hmac: s.hmac.to_vec(),
                associated: None,
                include_auth: false,
                role: AuthRole::None,
            });
        }
        // Bind sessions to the handles that need authorization.
        for (i, spec) in desc.handles.iter().enumerate() {
            if spec.auth != AuthRole::None {
                let u = area.uses.get_mut(i).ok_or(rc::AUTH_MISSING)?;
                u.associated = Some(handles[i]);
                u.role = spec.auth;
            }
        }
        let names: Vec<Vec<u8>> = handles[..desc.handles.len()]
            .iter()
            .map(|h| self.entity_name(*h))
            .collect();
        for i in 0..area.uses.len() {
            self.check_session(desc.code, locality, &mut area, i, &names, params)?;
        }
        if let Some((i, cp)) = &mut area.audit {
            if let Some(s) = self.v.sessions.get(area.uses[*i].handle) {
                *cp = cp_hash(s.hash, desc.code, &names, params);
            }
        }
        if let Some(d) = area.decrypt {
            let u = &area.uses[d];
            let key = self.param_key(u);
            let s = self.v.sessions.get(u.handle).ok_or(rc::FAILURE)?;
            if params.len() < 2 {
                return Err(rc::INSUFFICIENT + auth::session_rc(d));
            }
            let data = first_tpm2b(params).ok_or(rc::SIZE + auth::session_rc(d))?;
            s.symmetric.apply(
                s.hash,
                &key,
                &u.nonce_caller,
                s.nonce_tpm.as_bytes(),
                data,
                false,
            );
        }
        Ok(area)
    }

    /// sessionKey || authValue of the associated entity (if any): the key of
    /// parameter encryption.
    fn param_key(&self, u: &SessionUse) -> Vec<u8> {
        let mut key = self
            .v
            .sessions
            .get(u.handle)
            .map(|s| s.session_key.clone())
            .unwrap_or_default();
        if let Some(h) = u.associated {
            key.extend_from_slice(self.auth_value(h).as_bytes());
        }
        key
    }

    fn check_session(
        &mut self,
        code: u32,
        locality: u8,
        area: &mut AuthArea,
        i: usize,
        names: &[Vec<u8>],
        params: &[u8],
    ) -> Result<(), u32> {
        let dec = auth::session_rc(i);
        let u = area.uses[i].clone();
        // platformAuth of a command TPM2_PP_Commands listed needs physical
        // presence.
        if u.associated == Some(handle::PLATFORM)
            && !self.physical_presence
            && crate::commands::platform::pp_required(self, code)
        {
            log::warn!("vtpm: command {code:#x} needs physical presence");
            return Err(RC_PP + dec);
        }
        if u.handle == handle::RS_PW {
            let Some(h) = u.associated else {
                return Err(rc::HANDLE + dec);
            };
            if self.policy_session_required(h, u.role) {
                return Err(rc::AUTH_TYPE);
            }
            if !self.auth_value_available(h, u.role) {
                return Err(rc::AUTH_UNAVAILABLE);
            }
            self.check_da(h)?;
            if !auth::password_matches(&u.hmac, &self.auth_value(h)) {
                return Err(self.auth_failed(Some(h), i, None));
            }
            return Ok(());
        }
        let sess: AuthSession = self
            .v
            .sessions
            .get(u.handle)
            .cloned()
            .ok_or(rc::REFERENCE_S0 + i as u32)?;
        if sess.kind == SessionKind::Trial {
            return Err(rc::ATTRIBUTES + dec);
        }
        if sess.lockout_bound && !self.v.lockout_auth_enabled {
            return Err(rc::LOCKOUT);
        }
        if sess.da_bound
            && self.p.da.recovery_time != 0
            && self.v.failed_tries >= self.p.da.max_tries
        {
            return Err(rc::LOCKOUT);
        }
        let cp = cp_hash(sess.hash, code, names, params);
        let include_auth = match u.associated {
            None => {
                if u.attributes & (sa::DECRYPT | sa::ENCRYPT | sa::AUDIT) == 0 {
                    return Err(rc::ATTRIBUTES + dec);
                }
                false
            }
            Some(h) if sess.kind.is_policy() => {
                let inc = sess.policy.auth_value_needed || sess.policy.password_needed;
                if inc {
                    self.check_da(h)?;
                }
                let cmd_ctx = PolicyContext {
                    code,
                    locality,
                    cp: &cp,
                    names,
                    params,
                };
                self.check_policy(&cmd_ctx, &sess, h, u.role)
                    .map_err(|e| rc::safe_add(e, dec))?;
                inc
            }
            Some(h) => {
                if self.policy_session_required(h, u.role) {
                    return Err(rc::AUTH_TYPE);
                }
                if !self.auth_value_available(h, u.role) {
                    return Err(rc::AUTH_UNAVAILABLE);
                }
                let inc = !sess.is_bound_to(h, &self.auth_value(h));
                if inc {
                    self.check_da(h)?;
                }
                inc
            }
        };
        area.uses[i].include_auth = include_auth;
        let auth_value = u.associated.map(|h| self.auth_value(h));
        if sess.kind.is_policy() && sess.policy.password_needed {
            let ok = auth_value
                .as_ref()
                .is_some_and(|a| auth::password_matches(&u.hmac, a));
            if !ok {
                return Err(self.auth_failed(u.associated, i, Some((&sess, include_auth))));
            }
            return Ok(());
        }
        // Extra nonces of the decrypt and encrypt sessions, in the first
        // authorization session only.
        let mut extra: Vec<Digest> = Vec::new();
        if i == 0 && u.associated.is_some() {
            if let Some(d) = area.decrypt.filter(|&d| d != 0) {
                if let Some(s) = self.v.sessions.get(area.uses[d].handle) {
                    extra.push(s.nonce_tpm);
                }
            }
            if let Some(e) = area.encrypt.filter(|&e| e != 0 && Some(e) != area.decrypt) {
                if let Some(s) = self.v.sessions.get(area.uses[e].handle) {
                    extra.push(s.nonce_tpm);
                }
            }
        }
        let mut nonces: Vec<&[u8]> = alloc::vec![&u.nonce_caller, sess.nonce_tpm.as_bytes()];
        nonces.extend(extra.iter().map(|d| d.as_bytes()));
        let key_auth = if include_auth {
            auth_value.as_ref()
        } else {
            None
        };
        let expect = session_hmac(
            &sess,
            key_auth,
            cp.as_bytes(),
            &nonces,
            u.attributes,
            u.hmac.is_empty(),
        );
        if !ct_eq(expect.as_bytes(), &u.hmac) {
            return Err(self.auth_failed(u.associated, i, Some((&sess, include_auth))));
        }
        Ok(())
    }

    /// CheckPolicyAuthSession: the session's policy authorizes `h` for the
    /// command `c`.
    fn check_policy(
        &self,
        c: &PolicyContext,
        s: &AuthSession,
        h: u32,
        role: AuthRole,
    ) -> Result<(), u32> {
        let (code, locality, cp) = (c.code, c.locality, c.cp);
        let p = &s.policy;
        if code == crate::defs::cc::POLICY_SECRET && !p.auth_value_needed && !p.password_needed {
            return Err(rc::MODE);
        }
        if p.pcr_counter.is_some_and(|c| c != self.v.pcr_counter) {
            return Err(rc::PCR_CHANGED);
        }
        // An entity without an authPolicy has an empty one, which no
        // session's policy digest equals.
        let (alg, policy) = self.auth_policy(h).ok_or(rc::POLICY_FAIL)?;
        if !ct_eq(policy.as_bytes(), p.digest.as_bytes()) || alg != s.hash {
            return Err(rc::POLICY_FAIL);
        }
        if p.timeout.is_some_and(|t| t < self.tpm_time()) {
            return Err(rc::EXPIRED);
        }
        if p.command_code.is_some_and(|c| c != code) {
            return Err(rc::POLICY_CC);
        }
        // The ADMIN and DUP roles need a policy that names the command.
        if matches!(role, AuthRole::Admin | AuthRole::Dup) && p.command_code.is_none() {
            return Err(rc::POLICY_FAIL);
        }
        if p.locality
            .is_some_and(|l| l & crate::pcr::locality_bit(locality) == 0)
        {
            return Err(rc::LOCALITY);
        }
        if p.cp_hash.as_ref().is_some_and(|c| c != cp) {
            return Err(rc::POLICY_FAIL);
        }
        // TPM2_PolicyNameHash / PolicyDuplicationSelect: the handles' Names.
        if let Some(nh) = &p.name_hash {
            let parts: Vec<&[u8]> = c.names.iter().map(|n| n.as_slice()).collect();
            if s.hash.digest(&parts) != *nh {
                return Err(rc::POLICY_FAIL);
            }
        }
        // TPM2_PolicyTemplate: the template (second parameter, without its
        // size) of a creating command.
        if let Some(th) = &p.template_hash {
            let mut r = crate::marshal::Reader::new(c.params);
            let template = r
                .tpm2b(c.params.len())
                .and_then(|_| r.tpm2b(c.params.len()))
                .map_err(|_| rc::POLICY_FAIL)?;
            if s.hash.digest(&[template]) != *th {
                return Err(rc::POLICY_FAIL);
            }
        }
        // TPM2_PolicyNvWritten: an NV index in the required written state.
        if let Some(w) = p.nv_written {
            let written = self
                .nv_index(h)
                .map(|i| i.public.has(crate::nvindex::nva::WRITTEN))
                .ok_or(rc::POLICY_FAIL)?;
            if written != w {
                return Err(rc::POLICY_FAIL);
            }
        }
        // TPM2_PolicyPhysicalPresence: the platform must assert it now.
        if p.pp_required && !self.physical_presence {
            return Err(RC_PP);
        }
        Ok(())
    }

    /// Builds the response session area of a successful command whose response
    /// parameters are `out` (encrypted here when a session asks for it).
    pub(crate) fn respond_sessions(
        &mut self,
        code: u32,
        area: &AuthArea,
        out: &mut [u8],
    ) -> Vec<u8> {
        // New nonceTPM for every session used.
        for u in &area.uses {
            if u.handle == handle::RS_PW {
                continue;
            }
            let size = match self.v.sessions.get(u.handle) {
                Some(s) => s.hash.digest_size(),
                None => continue,
            };
            let mut n = Digest::filled(size, 0);
            self.random(n.as_bytes_mut());
            if let Some(s) = self.v.sessions.get_mut(u.handle) {
                s.nonce_tpm = n;
            }
        }
        if let Some(e) = area.encrypt {
            let u = &area.uses[e];
            let key = self.param_key(u);
            if let (Some(s), Some(data)) = (self.v.sessions.get(u.handle), first_tpm2b(out)) {
                s.symmetric.apply(
                    s.hash,
                    &key,
                    s.nonce_tpm.as_bytes(),
                    &u.nonce_caller,
                    data,
                    true,
                );
            }
        }
        let audit_attrs = self.update_session_audit(code, area, out);
        let now = self.tpm_time();
        let mut w = Writer::new();
        for (i, u) in area.uses.iter().enumerate() {
            // The audit session answers with auditExclusive as it now stands.
            let attributes = match audit_attrs {
                Some((a, attrs)) if a == i => attrs,
                _ => u.attributes,
            };
            if u.handle == handle::RS_PW {
                w.tpm2b(&[])
                    .u8(attributes | sa::CONTINUE_SESSION)
                    .tpm2b(&[]);
                continue;
            }
            let auth_value = u.associated.map(|h| self.auth_value(h));
            let Some(s) = self.v.sessions.get(u.handle) else {
                w.tpm2b(&[]).u8(attributes).tpm2b(&[]);
                continue;
            };
            let hmac = if s.kind.is_policy() && s.policy.password_needed {
                Digest::filled(0, 0)
            } else {
                let rp = rp_hash(s.hash, code, out);
                let key_auth = if u.include_auth {
                    auth_value.as_ref()
                } else {
                    None
                };
                session_hmac(
                    s,
                    key_auth,
                    rp.as_bytes(),
                    &[s.nonce_tpm.as_bytes(), &u.nonce_caller],
                    attributes,
                    u.hmac.is_empty(),
                )
            };
            w.tpm2b(s.nonce_tpm.as_bytes())
                .u8(attributes)
                .tpm2b(hmac.as_bytes());
            if attributes & sa::CONTINUE_SESSION == 0 {
                self.v.sessions.flush(u.handle);
            } else if let Some(s) = self.v.sessions.get_mut(u.handle) {
                if s.kind.is_policy() {
                    s.reset_policy(now);
                }
            }
        }
        w.buf
    }
}

impl Tpm {
    /// Session audit of a successful command (Part 1 §19.6.x): the audit
    /// session's digest is started (first use, or auditReset; the session
    /// becomes the exclusive one) and extended with cpHash and rpHash (over
    /// the response parameters as sent); a command with no audit session that
    /// may have sessions ends the exclusivity. Returns the audit session's
    /// index and its response attributes (auditExclusive as it now stands).
    pub(crate) fn note_no_audit_session(&mut self) {
        self.v.exclusive_audit = None;
    }

    fn update_session_audit(
        &mut self,
        code: u32,
        area: &AuthArea,
        out: &[u8],
    ) -> Option<(usize, u8)> {
        let Some((i, cp)) = &area.audit else {
            self.note_no_audit_session();
            return None;
        };
        let u = &area.uses[*i];
        let h = u.handle;
        let exclusive = self.v.exclusive_audit;
        let s = self.v.sessions.get_mut(h)?;
        if s.audit.is_none() || u.attributes & sa::AUDIT_RESET != 0 {
            s.audit = Some(Digest::filled(s.hash.digest_size(), 0));
            self.v.exclusive_audit = Some(h);
        } else if exclusive != Some(h) {
            self.v.exclusive_audit = None;
        }
        let s = self.v.sessions.get_mut(h)?;
        let rp = rp_hash(s.hash, code, out);
        let old = s.audit.unwrap_or_else(|| Digest::filled(0, 0));
        s.audit = Some(
            s.hash
                .digest(&[old.as_bytes(), cp.as_bytes(), rp.as_bytes()]),
        );
        let attrs = if self.v.exclusive_audit == Some(h) {
            u.attributes | sa::AUDIT_EXCLUSIVE
        } else {
            u.attributes & !sa::AUDIT_EXCLUSIVE
        };
        Some((*i, attrs))
    }
}

/// The data of the TPM2B at the start of `params` (None if its size field
/// runs past the buffer).
fn first_tpm2b(params: &mut [u8]) -> Option<&mut [u8]> {
    if params.len() < 2 {
        return None;
    }
    let n = usize::from(u16::from_be_bytes([params[0], params[1]]));
    params.get_mut(2..2 + n)
}
