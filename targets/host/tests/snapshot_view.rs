//! An origin's published snapshot list: a build that ran out of memory
//! must read as "could not tell", never as "no snapshots" (an origin write
//! taking it for that would overwrite chunks a snapshot has not copied),
//! and a caller that may sleep waits until it can tell.

mod snapshot_common;

use snapshot_common::*;

#[test]
fn a_failed_build_is_not_an_empty_list() {
    let mut v: Published<u32> = Published::Empty;
    assert_eq!(v.known(), Some(None));
    assert_eq!(v.publish(Ok(Some(3))), Ok(Some(3)));
    assert_eq!(v.known(), Some(Some(3)));
    // Out of memory while rebuilding: stale, and said so.
    assert_eq!(v.publish(Err(Error::NoMem)), Err(Error::NoMem));
    assert_eq!(v.known(), None, "a stale list is not known");
    assert!(matches!(v, Published::Stale));
    // A reader's rebuild failing again still cannot tell.
    assert_eq!(v.publish(Err(Error::NoMem)), Err(Error::NoMem));
    assert_eq!(v.known(), None);
    // Once built, it is known again; an empty list is known empty.
    assert_eq!(v.publish(Ok(Some(2))), Ok(Some(2)));
    assert_eq!(v.publish(Ok(None)), Ok(None));
    assert_eq!(v.known(), Some(None));
}

#[test]
fn a_caller_that_may_sleep_waits_until_it_can_tell() {
    // Fails 9 times, then finds the list.
    let mut tries = 0;
    let mut sleeps = Vec::new();
    let got = until_known(
        || {
            tries += 1;
            if tries < 10 {
                Err(Error::NoMem)
            } else {
                Ok(Some(5u32))
            }
        },
        |ms| sleeps.push(ms),
    );
    assert_eq!(got, Some(5));
    assert_eq!(tries, 10);
    assert_eq!(sleeps, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
    // A known answer, empty included, comes back at once.
    let mut slept = false;
    assert_eq!(until_known(|| Ok(None::<u32>), |_| slept = true), None);
    assert!(!slept);
}
