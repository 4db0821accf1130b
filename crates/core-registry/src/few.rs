//! [`Few`]: a short list whose first element is stored inline.

/// A short list whose first element is stored inline, so that the common case (a session with one agent, one run in
/// progress) costs no allocation. Order is not kept.
#[derive(Debug)]
pub(crate) struct Few<T> {
    // Invariant: `rest` is empty while `first` is `None`.
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Few<T> {
    pub(crate) const fn new() -> Self {
        Few { first: None, rest: Vec::new() }
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(&self.rest)
    }

    /// The first element that satisfies `pred`, looking at the inline one first (without an iterator chain, which
    /// does not optimize as well on the stream's hot path).
    pub(crate) fn find(&self, pred: impl Fn(&T) -> bool) -> Option<&T> {
        match &self.first {
            Some(first) if pred(first) => Some(first),
            Some(_) => self.rest.iter().find(|value| pred(value)),
            None => None,
        }
    }

    pub(crate) fn push(&mut self, value: T) {
        if self.first.is_none() {
            self.first = Some(value);
        } else {
            self.rest.push(value);
        }
    }

    /// Removes one element that satisfies `pred` and returns it.
    pub(crate) fn remove_where(&mut self, pred: impl Fn(&T) -> bool) -> Option<T> {
        if self.first.as_ref().is_some_and(&pred) {
            let removed = self.first.take();
            self.first = self.rest.pop();
            return removed;
        }
        let index = self.rest.iter().position(pred)?;
        Some(self.rest.swap_remove(index))
    }
}

#[cfg(test)]
mod tests {
    use super::Few;

    #[test]
    fn push_iter_and_remove_keep_every_element_once() {
        let mut few = Few::new();
        assert_eq!(few.len(), 0);
        for n in 0..5 {
            few.push(n);
        }
        assert_eq!(few.len(), 5);
        assert_eq!(few.remove_where(|n| *n == 0), Some(0));
        assert_eq!(few.remove_where(|n| *n == 3), Some(3));
        assert_eq!(few.remove_where(|n| *n == 3), None);
        assert_eq!(few.find(|n| *n == 4), Some(&4));
        assert_eq!(few.find(|n| *n == 0), None);
        let mut left: Vec<_> = few.iter().copied().collect();
        left.sort_unstable();
        assert_eq!(left, [1, 2, 4]);
        for n in [1, 2, 4] {
            assert_eq!(few.remove_where(|m| *m == n), Some(n));
        }
        assert_eq!((few.len(), few.iter().count()), (0, 0));
    }
}
