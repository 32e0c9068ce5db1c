//! Physical input over several VMs on one display: which VM's [`Router`] each
//! event of the physical keyboard and tablet goes to, the VMs stacked as the
//! display draws them (topmost first).
//!
//! - A **pointer position** goes to the topmost VM whose picture is under it; the
//!   others learn that the pointer is elsewhere. Over no VM, it is RayOS's.
//! - A **button press** or **wheel turn** goes to the VM the pointer is over (a
//!   press also gives that VM the keyboard focus); a **relative move** too, or
//!   if the pointer is over none, where a key press would go.
//! - A **key press** goes to the focused VM while it takes input (presented and
//!   interactive), else to the topmost VM that does.
//! - A **release** goes to every VM that saw the press (a key pressed in one VM
//!   and released after a click moved the focus is released there).
//! - A gaze point is placed like a pointer position.
//!
//! An event no VM delivers stays with RayOS (the caller hands it to the
//! authority partition).

use alloc::vec::Vec;

use authority_abi::input::{InputEvent, Space};

use crate::route::{Report, Routed, Router};

/// Routes `e` (received at `now`) through `stack` (each VM's key and router,
/// topmost first), moving the keyboard `focus`; the reports go to `out` with
/// their VM's key. Returns whether some VM delivered it.
pub fn route_stack<K: Copy + Eq>(
    stack: &mut [(K, &mut Router)],
    focus: &mut Option<K>,
    now: u64,
    e: &InputEvent,
    out: &mut Vec<(K, Report)>,
) -> bool {
    let deliver = |stack: &mut [(K, &mut Router)], i: usize, out: &mut Vec<(K, Report)>| {
        let mut reports = Vec::new();
        let (key, r) = &mut stack[i];
        let routed = r.route(now, e, &mut reports);
        out.extend(reports.into_iter().map(|rep| (*key, rep)));
        routed == Routed::Delivered
    };
    match *e {
        InputEvent::PointerAbs {
            x,
            y,
            space: Space::Display,
        }
        | InputEvent::Gaze { x, y } => {
            let under = stack.iter().position(|(_, r)| r.covers(x, y));
            for (i, (_, r)) in stack.iter_mut().enumerate() {
                if Some(i) != under {
                    r.pointer_elsewhere();
                }
            }
            under.is_some_and(|i| deliver(stack, i, out))
        }
        InputEvent::PointerRel { .. } if stack.iter().any(|(_, r)| r.pointer_inside()) => {
            let i = stack.iter().position(|(_, r)| r.pointer_inside());
            i.is_some_and(|i| deliver(stack, i, out))
        }
        InputEvent::Key { pressed: true, .. }
        | InputEvent::PointerAbs { .. }
        | InputEvent::PointerRel { .. } => {
            let focused =
                focus.and_then(|f| stack.iter().position(|(k, r)| *k == f && r.takes_input()));
            let target = focused.or_else(|| stack.iter().position(|(_, r)| r.takes_input()));
            target.is_some_and(|i| deliver(stack, i, out))
        }
        InputEvent::Key { pressed: false, .. } | InputEvent::Button { pressed: false, .. } => {
            let mut any = false;
            for i in 0..stack.len() {
                any |= deliver(stack, i, out);
            }
            any
        }
        InputEvent::Button { pressed: true, .. } | InputEvent::Wheel { .. } => {
            let Some(i) = stack.iter().position(|(_, r)| r.pointer_inside()) else {
                return false;
            };
            let delivered = deliver(stack, i, out);
            if delivered && matches!(e, InputEvent::Button { .. }) {
                *focus = Some(stack[i].0);
            }
            delivered
        }
    }
}

#[cfg(test)]
#[path = "stack_tests.rs"]
mod tests;
