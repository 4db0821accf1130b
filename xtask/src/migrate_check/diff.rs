//! A unified diff of two versions of a file, for `--fix --dry-run`: Myers' O(ND) line diff, hunks with three lines
//! of context, headers `--- a/<path>` / `+++ b/<path>` so that `git apply` and `patch -p1` take the output.

use std::fmt::Write;

const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Keep,
    Delete,
    Insert,
}

/// The unified diff turning `old` into `new`, or an empty string when they are equal.
pub(crate) fn unified(path: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = myers(&a, &b);
    let mut out = format!("--- a/{path}\n+++ b/{path}\n");
    // Walk the script, cutting it into hunks around the changes.
    let mut i = 0;
    while i < ops.len() {
        let Some(first_change) = ops[i..].iter().position(|op| *op != Op::Keep).map(|p| p + i) else { break };
        let start = first_change.saturating_sub(CONTEXT);
        // Extend the hunk while the gap between changes is at most 2 * CONTEXT lines.
        let mut end = first_change;
        loop {
            while end < ops.len() && ops[end] != Op::Keep {
                end += 1;
            }
            let keeps = ops[end..].iter().take_while(|op| **op == Op::Keep).count();
            if end + keeps < ops.len() && keeps <= 2 * CONTEXT {
                end += keeps;
            } else {
                end = (end + keeps.min(CONTEXT)).min(ops.len());
                break;
            }
        }
        let (mut old_line, mut new_line) = (0, 0);
        for op in &ops[..start] {
            match op {
                Op::Keep => (old_line, new_line) = (old_line + 1, new_line + 1),
                Op::Delete => old_line += 1,
                Op::Insert => new_line += 1,
            }
        }
        let old_count = ops[start..end].iter().filter(|op| **op != Op::Insert).count();
        let new_count = ops[start..end].iter().filter(|op| **op != Op::Delete).count();
        let range = |line: usize, count: usize| {
            let first = if count == 0 { line } else { line + 1 };
            if count == 1 { first.to_string() } else { format!("{first},{count}") }
        };
        let _ = writeln!(out, "@@ -{} +{} @@", range(old_line, old_count), range(new_line, new_count));
        let (mut ai, mut bi) = (old_line, new_line);
        for op in &ops[start..end] {
            let (sign, text) = match op {
                Op::Keep => {
                    ai += 1;
                    bi += 1;
                    (' ', a[ai - 1])
                }
                Op::Delete => {
                    ai += 1;
                    ('-', a[ai - 1])
                }
                Op::Insert => {
                    bi += 1;
                    ('+', b[bi - 1])
                }
            };
            out.push(sign);
            out.push_str(text);
            if !text.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
        i = end;
    }
    out
}

/// The shortest edit script from `a` to `b` (Myers 1986), deletions before insertions within a change.
fn myers(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = (n + m) as usize;
    let offset = max as isize + 1;
    let mut v = vec![0isize; 2 * max + 3];
    let mut trace: Vec<Vec<isize>> = Vec::new();
    'outer: for d in 0..=max as isize {
        // Only diagonals -(d + 1)..=d + 1 are read when backtracking from round d: O(D^2) memory, not O(D(N + M)).
        trace.push(v[(offset - d - 1) as usize..=(offset + d + 1) as usize].to_vec());
        let mut k = -d;
        while k <= d {
            let index = (k + offset) as usize;
            let mut x =
                if k == -d || (k != d && v[index - 1] < v[index + 1]) { v[index + 1] } else { v[index - 1] + 1 };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[index] = x;
            if x >= n && y >= m {
                break 'outer;
            }
            k += 2;
        }
    }
    // Backtrack through the saved frontiers.
    let mut ops = Vec::new();
    let (mut x, mut y) = (n, m);
    for (d, v) in trace.iter().enumerate().rev() {
        let d = d as isize;
        let k = x - y;
        let at = |k: isize| v[(k + d + 1) as usize];
        let prev_k = if k == -d || (k != d && at(k - 1) < at(k + 1)) { k + 1 } else { k - 1 };
        let prev_x = at(prev_k);
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            ops.push(Op::Keep);
            x -= 1;
            y -= 1;
        }
        if d > 0 {
            ops.push(if x == prev_x { Op::Insert } else { Op::Delete });
        }
        (x, y) = (prev_x, prev_y);
    }
    ops.reverse();
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_have_context_and_counts() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\ni\n";
        assert_eq!(
            unified("x.rs", old, new),
            "--- a/x.rs\n+++ b/x.rs\n@@ -1,8 +1,9 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n h\n+i\n"
        );
        assert_eq!(unified("x.rs", old, old), "");
    }

    #[test]
    fn distant_changes_make_two_hunks() {
        let old: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let new = old.replacen("2\n", "two\n", 1).replace("19\n", "");
        let diff = unified("f", &old, &new);
        assert!(diff.contains("@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n"), "{diff}");
        assert!(diff.contains("@@ -16,5 +16,4 @@\n 16\n 17\n 18\n-19\n 20\n"), "{diff}");
    }

    #[test]
    fn missing_final_newline_is_marked() {
        assert_eq!(
            unified("f", "a", "b"),
            "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+b\n\\ No newline at end of file\n"
        );
    }
}
