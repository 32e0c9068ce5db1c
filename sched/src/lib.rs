//! The vCPU scheduler's policy, as pure logic the hypervisor drives: which
//! vCPU a physical CPU runs next, which CPU to wake when a vCPU becomes
//! runnable, and when a running vCPU must give its CPU up.
//!
//! One run queue serves every physical CPU (see [`RunQueue`]); el2 holds it
//! under one lock and does the switching. Tasks are numbered `0..tasks` (el2:
//! a vCPU's index); CPUs `0..cpus`. Time is the caller's (a counter value), so
//! the policy is deterministic and tested on the host.
//!
//! * **Priorities:** a task's priority is a `u8`, higher first; within one
//!   level tasks run round robin (a preempted or yielding task goes to the back
//!   of its level).
//! * **Blocking:** a task that waits (a vCPU's WFI) blocks, optionally until a
//!   deadline; [`RunQueue::wake`] or [`RunQueue::expire`] make it runnable. A
//!   wake-up that arrives while the task still runs is remembered, so a task
//!   that checked for work and then blocks cannot miss it ([`RunQueue::block`]).
//! * **Preemption:** [`RunQueue::should_preempt`] says whether a waiting task of
//!   the same or a higher priority is owed the CPU at the end of a time slice.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Most physical CPUs one run queue serves (bits of the idle mask).
pub const MAX_CPUS: usize = 64;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started (a vCPU powered off).
    Off,
    /// Waiting in the queue for a CPU.
    Runnable,
    /// Running on CPU `cpu`.
    Running { cpu: usize },
    /// Waiting for a wake-up, or until the counter reaches `until`.
    Blocked { until: Option<u64> },
}

/// What the caller must do after a task became runnable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Nothing: the task was runnable already, off, or every CPU is busy with
    /// work of at least its priority (it runs when one gives its CPU up).
    Nothing,
    /// Interrupt CPU `cpu`: it is idle (it picks the task), or it runs the task
    /// itself (which must look at its new work), or it runs a task of lower
    /// priority (which it must preempt).
    Kick(usize),
}

#[derive(Debug, Clone, Copy)]
struct Task {
    state: State,
    priority: u8,
    /// A wake-up arrived while the task was running.
    woken: bool,
    /// The CPU it last ran on.
    last_cpu: Option<usize>,
}

/// Why a task is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No such task or CPU.
    OutOfRange,
    /// The task is not in the state the call needs (e.g. starting a running task).
    WrongState(State),
}

/// The run queue of every physical CPU.
///
/// One queue for all CPUs rather than one per CPU: the machines this runs on
/// have a handful of CPUs and vCPUs, so one short lock is not contended, a vCPU
/// runs on whichever CPU frees up first (no migration or balancing step), and
/// priorities are global — a higher-priority task never waits behind a lower
/// one on another CPU's queue.
#[derive(Debug)]
pub struct RunQueue {
    tasks: Vec<Task>,
    /// Runnable tasks in arrival order; [`RunQueue::pick`] takes the first of
    /// the highest priority.
    queue: VecDeque<usize>,
    /// Per CPU: the task it runs.
    current: Vec<Option<usize>>,
    /// Bit `c`: CPU `c` found nothing to run and waits for a kick.
    idle: u64,
}

impl RunQueue {
    /// A queue for `tasks` tasks (all off, priority 0) on `cpus` CPUs.
    pub fn new(tasks: usize, cpus: usize) -> Self {
        Self {
            tasks: (0..tasks)
                .map(|_| Task {
                    state: State::Off,
                    priority: 0,
                    woken: false,
                    last_cpu: None,
                })
                .collect(),
            queue: VecDeque::with_capacity(tasks),
            current: (0..cpus.min(MAX_CPUS)).map(|_| None).collect(),
            idle: 0,
        }
    }

    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    pub fn cpus(&self) -> usize {
        self.current.len()
    }

    pub fn state(&self, t: usize) -> Option<State> {
        self.tasks.get(t).map(|k| k.state)
    }

    /// The CPU running task `t`, if it runs.
    pub fn cpu_of(&self, t: usize) -> Option<usize> {
        match self.state(t)? {
            State::Running { cpu } => Some(cpu),
            _ => None,
        }
    }

    /// The task CPU `cpu` runs.
    pub fn current(&self, cpu: usize) -> Option<usize> {
        self.current.get(cpu).copied().flatten()
    }

    pub fn priority(&self, t: usize) -> Option<u8> {
        self.tasks.get(t).map(|k| k.priority)
    }

    /// Sets task `t`'s priority (takes effect at its next queueing or pick).
    pub fn set_priority(&mut self, t: usize, priority: u8) -> Result<(), Error> {
        self.tasks.get_mut(t).ok_or(Error::OutOfRange)?.priority = priority;
        Ok(())
    }

    /// Makes an off task runnable (a vCPU powered on).
    pub fn start(&mut self, t: usize) -> Result<Wake, Error> {
        let k = self.tasks.get_mut(t).ok_or(Error::OutOfRange)?;
        if k.state != State::Off {
            return Err(Error::WrongState(k.state));
        }
        k.woken = false;
        Ok(self.enqueue(t))
    }

    /// CPU `cpu` looks for work: the first runnable task of the highest
    /// priority now runs there. `None`: the CPU is idle until kicked.
    pub fn pick(&mut self, cpu: usize) -> Result<Option<usize>, Error> {
        if cpu >= self.current.len() {
            return Err(Error::OutOfRange);
        }
        if let Some(t) = self.current[cpu] {
            return Err(Error::WrongState(self.tasks[t].state));
        }
        let best = self
            .queue
            .iter()
            .enumerate()
            .max_by(|(ia, a), (ib, b)| {
                // Highest priority; among equals the earliest (max_by keeps the last
                // maximum, so an earlier position compares greater).
                self.tasks[**a]
                    .priority
                    .cmp(&self.tasks[**b].priority)
                    .then(ib.cmp(ia))
            })
            .map(|(i, _)| i);
        let Some(i) = best else {
            self.idle |= 1 << cpu;
            return Ok(None);
        };
        let t = self.queue.remove(i).unwrap_or(i);
        self.tasks[t].state = State::Running { cpu };
        self.tasks[t].woken = false;
        self.tasks[t].last_cpu = Some(cpu);
        self.current[cpu] = Some(t);
        self.idle &= !(1 << cpu);
        Ok(Some(t))
    }

    /// The task running on `cpu` gives it up and stays runnable (its time slice
    /// ended, or it yielded): to the back of its priority level. An idle CPU, if
    /// there is one, is to be kicked to run it.
    pub fn preempt(&mut self, cpu: usize) -> Result<Wake, Error> {
        let t = self.take_current(cpu)?;
        self.tasks[t].state = State::Runnable;
        self.queue.push_back(t);
        if self.idle != 0 {
            let c = self.idle.trailing_zeros() as usize;
            self.idle &= !(1 << c);
            return Ok(Wake::Kick(c));
        }
        Ok(Wake::Nothing)
    }

    /// The task running on `cpu` waits until woken or until the counter reaches
    /// `until`. Returns `false`, and the task keeps running, if a wake-up came
    /// while it ran (since it was picked or last blocked).
    pub fn block(&mut self, cpu: usize, until: Option<u64>) -> Result<bool, Error> {
        let t = self.current(cpu).ok_or(Error::OutOfRange)?;
        if core::mem::take(&mut self.tasks[t].woken) {
            return Ok(false);
        }
        self.take_current(cpu)?;
        self.tasks[t].state = State::Blocked { until };
        Ok(true)
    }

    /// The task running on `cpu` stops (a vCPU powered off).
    pub fn stop(&mut self, cpu: usize) -> Result<usize, Error> {
        let t = self.take_current(cpu)?;
        self.tasks[t].state = State::Off;
        self.tasks[t].woken = false;
        Ok(t)
    }

    /// Task `t` has new work (an interrupt for a vCPU, a kick).
    pub fn wake(&mut self, t: usize) -> Result<Wake, Error> {
        let k = self.tasks.get_mut(t).ok_or(Error::OutOfRange)?;
        match k.state {
            State::Blocked { .. } => Ok(self.enqueue(t)),
            State::Running { cpu } => {
                k.woken = true;
                Ok(Wake::Kick(cpu))
            }
            State::Runnable | State::Off => Ok(Wake::Nothing),
        }
    }

    /// Wakes every blocked task whose deadline is at or before `now`; `kick`
    /// gets each CPU to interrupt.
    pub fn expire(&mut self, now: u64, mut kick: impl FnMut(usize)) {
        for t in 0..self.tasks.len() {
            if matches!(self.tasks[t].state, State::Blocked { until: Some(u) } if u <= now) {
                if let Wake::Kick(c) = self.enqueue(t) {
                    kick(c);
                }
            }
        }
    }

    /// The earliest deadline of a blocked task.
    pub fn next_deadline(&self) -> Option<u64> {
        self.tasks
            .iter()
            .filter_map(|k| match k.state {
                State::Blocked { until } => until,
                _ => None,
            })
            .min()
    }

    /// Whether the task running on `cpu` should give the CPU up at the end of
    /// its time slice: a runnable task of at least its priority waits.
    pub fn should_preempt(&self, cpu: usize) -> bool {
        let Some(t) = self.current(cpu) else {
            return false;
        };
        let p = self.tasks[t].priority;
        self.queue.iter().any(|&q| self.tasks[q].priority >= p)
    }

    /// Whether any task waits in the queue.
    pub fn has_waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    fn take_current(&mut self, cpu: usize) -> Result<usize, Error> {
        let t = self
            .current
            .get_mut(cpu)
            .ok_or(Error::OutOfRange)?
            .take()
            .ok_or(Error::OutOfRange)?;
        Ok(t)
    }

    /// Queues task `t` as runnable and says which CPU should learn of it: an
    /// idle one — the one it last ran on if that idles (its translations and
    /// caches are there, and a device completing its I/O interrupts that CPU) —
    /// else one running a task of lower priority (the lowest).
    fn enqueue(&mut self, t: usize) -> Wake {
        self.tasks[t].state = State::Runnable;
        self.queue.push_back(t);
        if self.idle != 0 {
            let c = match self.tasks[t].last_cpu {
                Some(l) if self.idle & (1 << l) != 0 => l,
                _ => self.idle.trailing_zeros() as usize,
            };
            // Kicked once: the CPU picks when it wakes, and another wake-up
            // meanwhile goes to another idle CPU.
            self.idle &= !(1 << c);
            return Wake::Kick(c);
        }
        let p = self.tasks[t].priority;
        self.current
            .iter()
            .enumerate()
            .filter_map(|(c, cur)| cur.map(|r| (c, self.tasks[r].priority)))
            .filter(|&(_, rp)| rp < p)
            .min_by_key(|&(_, rp)| rp)
            .map_or(Wake::Nothing, |(c, _)| Wake::Kick(c))
    }
}

#[cfg(test)]
mod tests;
