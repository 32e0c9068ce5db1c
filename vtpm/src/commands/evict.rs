//! Part 3 §28.5: TPM2_EvictControl — make a loaded key persistent (in the NV
//! image, under a handle in the owner's or the platform's range) or remove a
//! persistent key.

use crate::defs::{handle, limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::object::Object;
use crate::public::attr;

/// Persistent handles the owner may use (0x81000000..=0x817FFFFF); the
/// platform's are above.
const OWNER_PERSISTENT_LAST: u32 = 0x817F_FFFF;

pub fn evict_control(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let persistent = cmd.params.u32().p(1)?;
    if handle::ht(persistent) != handle::HT_PERSISTENT {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    cmd.finish()?;
    let (auth, object) = (cmd.handles[0], cmd.handles[1]);
    let h2 = rc::H + 2 * rc::N1;
    let key = match tpm.v.objects.get(object) {
        Some(Object::Key(k)) => k.clone(),
        // Sequence objects cannot be made persistent.
        Some(Object::Sequence(_)) => return Err(rc::TYPE + h2),
        None => return Err(rc::HANDLE + h2),
    };
    // The platform may evict anything; the owner nothing of the platform's.
    if auth == handle::OWNER && key.hierarchy == handle::PLATFORM {
        return Err(rc::HIERARCHY);
    }
    let owner_range = persistent <= OWNER_PERSISTENT_LAST;
    if (auth == handle::OWNER) != owner_range {
        return Err(rc::RANGE + rc::P + rc::N1);
    }
    if handle::ht(object) == handle::HT_PERSISTENT {
        // Removing: the handle must name the object itself.
        if object != persistent {
            return Err(rc::HANDLE + h2);
        }
        tpm.v.objects.remove_persistent(persistent);
        tpm.p.persistent_objects.retain(|(h, _)| *h != persistent);
        cmd.nv_dirty = true;
        return Ok(());
    }
    if key.private.is_none() || key.public.has(attr::ST_CLEAR) || key.hierarchy == handle::NULL {
        return Err(rc::ATTRIBUTES + h2);
    }
    if tpm.v.objects.get(persistent).is_some() {
        return Err(rc::NV_DEFINED);
    }
    if tpm.p.persistent_objects.len() >= limits::MAX_PERSISTENT_OBJECTS {
        return Err(rc::NV_SPACE);
    }
    tpm.p.persistent_objects.push((persistent, key.encode()));
    tpm.p.persistent_objects.sort_by_key(|(h, _)| *h);
    tpm.v.objects.set_persistent(persistent, Object::Key(key));
    cmd.nv_dirty = true;
    Ok(())
}
