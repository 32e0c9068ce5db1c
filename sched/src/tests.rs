use super::*;

#[test]
fn round_robin_within_a_level() {
    let mut q = RunQueue::new(3, 1);
    for t in 0..3 {
        q.start(t).unwrap();
    }
    let mut order = alloc::vec::Vec::new();
    for _ in 0..6 {
        let t = q.pick(0).unwrap().unwrap();
        order.push(t);
        assert!(q.should_preempt(0));
        q.preempt(0).unwrap();
    }
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn higher_priority_runs_first_and_is_not_preempted_by_lower() {
    let mut q = RunQueue::new(3, 1);
    q.set_priority(2, 5).unwrap();
    for t in 0..3 {
        q.start(t).unwrap();
    }
    assert_eq!(q.pick(0).unwrap(), Some(2));
    // Only lower-priority work waits: the slice is renewed.
    assert!(!q.should_preempt(0));
    q.preempt(0).unwrap();
    assert_eq!(q.pick(0).unwrap(), Some(2));
    // Once it blocks, the others share the CPU.
    assert_eq!(q.block(0, None), Ok(true));
    assert_eq!(q.pick(0).unwrap(), Some(0));
    assert!(q.should_preempt(0));
}

#[test]
fn waking_a_higher_priority_task_kicks_the_cpu_running_the_lowest() {
    let mut q = RunQueue::new(3, 2);
    q.set_priority(0, 1).unwrap();
    q.set_priority(2, 9).unwrap();
    q.start(0).unwrap();
    q.start(1).unwrap();
    assert_eq!(q.pick(0).unwrap(), Some(0));
    assert_eq!(q.pick(1).unwrap(), Some(1));
    assert_eq!(q.start(2), Ok(Wake::Kick(1)), "CPU 1 runs priority 0");
    assert!(q.should_preempt(1));
    assert!(q.should_preempt(0), "priority 9 waits, CPU 0 runs 1");
}

#[test]
fn idle_cpus_are_kicked_once_each() {
    let mut q = RunQueue::new(3, 2);
    assert_eq!(q.pick(0).unwrap(), None);
    assert_eq!(q.pick(1).unwrap(), None);
    assert_eq!(q.start(0), Ok(Wake::Kick(0)));
    assert_eq!(q.start(1), Ok(Wake::Kick(1)));
    // Both CPUs are on their way; the third waits for one.
    assert_eq!(q.start(2), Ok(Wake::Nothing));
    assert_eq!(q.pick(1).unwrap(), Some(0));
    assert_eq!(q.pick(0).unwrap(), Some(1));
    assert_eq!(q.cpu_of(0), Some(1));
    assert_eq!(q.state(2), Some(State::Runnable));
}

#[test]
fn a_wake_while_running_is_not_lost_by_a_later_block() {
    let mut q = RunQueue::new(1, 1);
    q.start(0).unwrap();
    q.pick(0).unwrap();
    assert_eq!(q.wake(0), Ok(Wake::Kick(0)));
    assert_eq!(q.block(0, None), Ok(false), "the wake-up came first");
    assert_eq!(q.current(0), Some(0));
    assert_eq!(q.block(0, None), Ok(true));
    assert_eq!(q.state(0), Some(State::Blocked { until: None }));
    assert_eq!(q.pick(0).unwrap(), None);
    assert_eq!(q.wake(0), Ok(Wake::Kick(0)));
    assert_eq!(q.pick(0).unwrap(), Some(0));
}

#[test]
fn deadlines_wake_blocked_tasks_in_time() {
    let mut q = RunQueue::new(3, 1);
    for t in 0..3 {
        q.start(t).unwrap();
    }
    for until in [Some(300), Some(100), None] {
        q.pick(0).unwrap();
        q.block(0, until).unwrap();
    }
    assert_eq!(q.next_deadline(), Some(100));
    assert_eq!(q.pick(0).unwrap(), None);
    let mut kicked = alloc::vec::Vec::new();
    q.expire(99, |c| kicked.push(c));
    assert!(kicked.is_empty());
    q.expire(100, |c| kicked.push(c));
    assert_eq!(kicked, [0]);
    assert_eq!(q.state(1), Some(State::Runnable));
    assert_eq!(q.state(0), Some(State::Blocked { until: Some(300) }));
    assert_eq!(q.next_deadline(), Some(300));
    assert_eq!(q.state(2), Some(State::Blocked { until: None }));
}

#[test]
fn stopped_tasks_are_never_picked_and_restart() {
    let mut q = RunQueue::new(2, 1);
    q.start(0).unwrap();
    q.pick(0).unwrap();
    assert_eq!(q.stop(0), Ok(0));
    assert_eq!(q.wake(0), Ok(Wake::Nothing));
    assert_eq!(q.pick(0).unwrap(), None);
    assert_eq!(q.start(0), Ok(Wake::Kick(0)));
    assert_eq!(q.start(0), Err(Error::WrongState(State::Runnable)));
}

#[test]
fn bad_indices_are_refused() {
    let mut q = RunQueue::new(1, 1);
    assert_eq!(q.start(1), Err(Error::OutOfRange));
    assert_eq!(q.pick(1), Err(Error::OutOfRange));
    assert_eq!(q.preempt(0), Err(Error::OutOfRange), "nothing runs");
    assert_eq!(q.wake(7), Err(Error::OutOfRange));
    q.start(0).unwrap();
    q.pick(0).unwrap();
    assert!(matches!(q.pick(0), Err(Error::WrongState(_))));
}

#[test]
fn a_woken_task_goes_back_to_its_own_cpu_when_that_idles() {
    let mut q = RunQueue::new(2, 2);
    q.start(0).unwrap();
    assert_eq!(q.pick(1).unwrap(), Some(0));
    assert_eq!(q.pick(0).unwrap(), None);
    // Task 0 blocks on CPU 1: both idle.
    assert_eq!(q.block(1, None), Ok(true));
    assert_eq!(q.pick(1).unwrap(), None);
    // Woken: CPU 1, where it ran, not the lowest idle one.
    assert_eq!(q.wake(0), Ok(Wake::Kick(1)));
    assert_eq!(q.pick(1).unwrap(), Some(0));
    assert_eq!(q.block(1, None), Ok(true));
    assert_eq!(q.pick(1).unwrap(), None);
    // Its CPU busy with task 1 (CPU 0, kicked for it, came too late): the
    // idle one.
    assert_eq!(q.start(1), Ok(Wake::Kick(0)));
    assert_eq!(q.pick(1).unwrap(), Some(1));
    assert_eq!(q.pick(0).unwrap(), None);
    assert_eq!(q.wake(0), Ok(Wake::Kick(0)));
    assert_eq!(q.pick(0).unwrap(), Some(0));
    assert_eq!(q.cpu_of(0), Some(0));
}

#[test]
fn a_preempted_task_goes_to_an_idle_cpu() {
    let mut q = RunQueue::new(2, 2);
    q.start(0).unwrap();
    q.start(1).unwrap();
    assert_eq!(q.pick(0).unwrap(), Some(0));
    assert_eq!(q.pick(1).unwrap(), Some(1));
    assert_eq!(q.block(1, None), Ok(true));
    assert_eq!(q.pick(1).unwrap(), None);
    // CPU 0's slice ends with nothing else waiting: CPU 1 idles, so it takes the
    // preempted task rather than leaving it queued.
    assert_eq!(q.preempt(0), Ok(Wake::Kick(1)));
    assert_eq!(q.pick(1).unwrap(), Some(0));
    assert_eq!(q.preempt(1), Ok(Wake::Nothing));
}
