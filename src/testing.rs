//! For tests only: what a test does when this machine cannot run it. It fails, saying why,
//! unless whoever runs the tests allowed that category to be skipped with
//! `OMRAFT_ALLOW_SKIP=CATEGORY[,CATEGORY...]` (`bed`: the real-host test bed; `drbdadm`: checks
//! by the real drbdadm). A skip allowed so prints one `SKIPPED TEST` line, which `scripts/test`
//! counts apart from the tests that passed.

use std::io::Write;

/// The environment variable listing the categories whose tests may skip.
pub const ALLOW_SKIP: &str = "OMRAFT_ALLOW_SKIP";

/// What begins (or follows the test harness's `test NAME ... `) the line of a skipped test.
pub const SKIPPED: &str = "SKIPPED TEST";

/// Whether `list` (the value of `OMRAFT_ALLOW_SKIP`: comma-separated categories) names
/// `category`.
pub fn allowed(list: &str, category: &str) -> bool {
    list.split(',').any(|c| c.trim() == category)
}

/// The calling test, of `category`, cannot run here because of `why`. It fails (panics) unless
/// `OMRAFT_ALLOW_SKIP` allows the category; then this prints the skip on stderr, past the test
/// harness's capture so that it shows in the output of a test that passes, and returns, and the
/// test must return without running.
pub fn cannot_run(category: &str, why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let list = std::env::var(ALLOW_SKIP).unwrap_or_default();
    match skip(&list, test, category, why) {
        // One write, so the line stays whole beside the harness's own output.
        Ok(line) => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        Err(failure) => panic!("{failure}"),
    }
}

/// The line telling that `test` skipped, when `list` allows `category`; else why it fails.
fn skip(list: &str, test: &str, category: &str, why: &str) -> Result<String, String> {
    if allowed(list, category) {
        Ok(format!("{SKIPPED} {test} ({category}): {why}\n"))
    } else {
        Err(format!(
            "this test cannot run here: {why}\n(to skip such tests instead, set {ALLOW_SKIP}={category})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_categories_may_skip() {
        assert!(allowed("bed,drbdadm", "bed"));
        assert!(allowed("bed, drbdadm", "drbdadm"));
        assert!(!allowed("", "bed"));
        assert!(!allowed("beds", "bed"));
        assert!(!allowed("drbdadm", "bed"));
    }

    #[test]
    fn a_test_that_cannot_run_fails_unless_its_category_may_skip() {
        let failure = skip("drbdadm", "bed::t", "bed", "not root").unwrap_err();
        assert!(
            failure.contains("not root") && failure.contains("OMRAFT_ALLOW_SKIP=bed"),
            "{failure}"
        );
        assert_eq!(
            skip("drbdadm,bed", "bed::t", "bed", "not root").unwrap(),
            "SKIPPED TEST bed::t (bed): not root\n"
        );
    }
}
