//! The boot sequence, as a state machine: boot → read the default VM's policy →
//! locate it (VM_LIST) → resume or cold-boot it (VM_START; the hypervisor picks
//! by `resume_on_boot`) → run it in the background (hidden, not interactive) —
//! or present it when its policy says `visible_on_start` → the shell, where
//! `present` and `leave` act on request. Presenting never creates a VM.
//!
//! **The default VM** is the first VM in VM_LIST order (the registry's) whose
//! policy has `autostart`; when none has, the first VM. With no VM at all the
//! shell runs alone.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use authority_abi::call::VmState;
use monitor::command::{DisplayChange, DisplayPlacement, InputAction};

use crate::policy::{AUTOSTART, VISIBLE_ON_START};
use crate::Authority;

/// Where the sequence is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing done yet.
    Boot,
    /// Read every VM's policy, choose the default VM.
    ReadPolicy,
    /// Find the default VM's state in VM_LIST.
    Locate { vm: String, policy: u32 },
    /// Start (or resume) it.
    Start {
        vm: String,
        policy: u32,
        state: VmState,
    },
    /// Hide it and take input away (or present it: `visible_on_start`).
    Background { vm: String, policy: u32 },
    /// Finished: the shell takes over.
    Done(Outcome),
}

/// How the boot sequence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No VM exists: the shell runs alone.
    NoVm,
    /// The default VM runs, hidden and not interactive.
    Background { vm: String },
    /// The default VM runs, presented and interactive (`visible_on_start`).
    Presented { vm: String },
    /// A step failed; the shell runs and the operator can act.
    Failed { vm: String, why: String },
}

/// The boot sequence.
pub struct Boot {
    state: State,
    /// One line per step, for the console.
    pub log: Vec<String>,
}

impl Default for Boot {
    fn default() -> Self {
        Self::new()
    }
}

impl Boot {
    pub fn new() -> Self {
        Self {
            state: State::Boot,
            log: Vec::new(),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Does one step; `false` once [`State::Done`].
    pub fn step(&mut self, ctl: &mut dyn Authority) -> bool {
        let next = match core::mem::replace(&mut self.state, State::Boot) {
            State::Boot => State::ReadPolicy,
            State::ReadPolicy => {
                let names: Vec<String> = ctl.list().into_iter().map(|v| v.name).collect();
                let mut chosen = None;
                for n in &names {
                    match ctl.policy(n) {
                        Ok(p) if p & AUTOSTART != 0 => {
                            chosen = Some((n.clone(), p));
                            break;
                        }
                        Ok(p) if chosen.is_none() => chosen = Some((n.clone(), p)),
                        Ok(_) => {}
                        Err(e) => self.log.push(format!("vm {n}: no policy: {e}")),
                    }
                }
                match chosen {
                    None if names.is_empty() => State::Done(Outcome::NoVm),
                    None => State::Done(Outcome::Failed {
                        vm: names[0].clone(),
                        why: String::from("no VM's policy could be read"),
                    }),
                    Some((vm, policy)) => {
                        self.log
                            .push(format!("default VM {vm} (policy {policy:#x})"));
                        State::Locate { vm, policy }
                    }
                }
            }
            State::Locate { vm, policy } => {
                match ctl.entries().into_iter().find(|e| e.name() == Some(&vm)) {
                    Some(e) => State::Start {
                        vm,
                        policy,
                        state: e.state,
                    },
                    None => State::Done(Outcome::Failed {
                        vm,
                        why: String::from("it left VM_LIST"),
                    }),
                }
            }
            State::Start { vm, policy, state } => {
                let r = match state {
                    VmState::Running => {
                        self.log.push(format!("vm {vm} is running"));
                        Ok(())
                    }
                    VmState::Paused => ctl.resume(&vm).map(|()| {
                        self.log.push(format!("vm {vm} resumed from pause"));
                    }),
                    VmState::Off | VmState::Suspended => ctl.start(&vm).map(|()| {
                        self.log.push(format!(
                            "vm {vm} started ({})",
                            if state == VmState::Suspended {
                                "from its saved state if it is valid"
                            } else {
                                "resumed or cold-booted by its policy"
                            }
                        ));
                    }),
                };
                match r {
                    Ok(()) => State::Background { vm, policy },
                    Err(e) => State::Done(Outcome::Failed {
                        vm,
                        why: format!("{e}"),
                    }),
                }
            }
            State::Background { vm, policy } => {
                let visible = policy & VISIBLE_ON_START != 0;
                let r = if visible {
                    present(ctl, &vm)
                } else {
                    background(ctl, &vm)
                };
                State::Done(match r {
                    Ok(()) if visible => {
                        self.log
                            .push(format!("vm {vm} presented (visible_on_start)"));
                        Outcome::Presented { vm }
                    }
                    Ok(()) => {
                        self.log
                            .push(format!("vm {vm} runs in the background (hidden, no input)"));
                        Outcome::Background { vm }
                    }
                    Err(why) => Outcome::Failed { vm, why },
                })
            }
            State::Done(o) => {
                self.state = State::Done(o);
                return false;
            }
        };
        self.state = next;
        true
    }

    /// Runs every step; the outcome.
    pub fn run(&mut self, ctl: &mut dyn Authority) -> Outcome {
        loop {
            if let State::Done(o) = &self.state {
                return o.clone();
            }
            self.step(ctl);
        }
    }
}

/// Fullscreen and interactive.
pub fn present(ctl: &mut dyn Authority, vm: &str) -> Result<(), String> {
    ctl.display(vm, DisplayChange::Present(DisplayPlacement::Fullscreen))
        .map_err(|e| format!("{e}"))?;
    ctl.input(vm, InputAction::Interactive(true))
        .map(|_| ())
        .map_err(|e| format!("{e}"))
}

/// Hidden and not interactive.
pub fn background(ctl: &mut dyn Authority, vm: &str) -> Result<(), String> {
    ctl.display(vm, DisplayChange::Hide)
        .map_err(|e| format!("{e}"))?;
    ctl.input(vm, InputAction::Interactive(false))
        .map(|_| ())
        .map_err(|e| format!("{e}"))
}
