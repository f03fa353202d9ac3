//! The buffer a request body is read into. Small bodies live on the heap; large ones in an
//! anonymous memory map of their own, so that their memory goes back to the OS the moment the
//! request is answered. (The heap allocator keeps freed multi-megabyte buffers for reuse: after
//! a burst of large uploads the host held ~25 MiB more than before for good.)

use axum::body::Bytes;
use memmap2::MmapMut;

/// Bodies at least this large get a map of their own.
const MAPPED_FROM: usize = 256 << 10;

pub enum BodyBuf {
    Heap(Vec<u8>),
    Mapped { map: MmapMut, len: usize },
}

impl BodyBuf {
    /// A buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> BodyBuf {
        if capacity >= MAPPED_FROM
            && let Ok(map) = MmapMut::map_anon(capacity)
        {
            return BodyBuf::Mapped { map, len: 0 };
        }
        BodyBuf::Heap(Vec::with_capacity(capacity))
    }

    pub fn len(&self) -> usize {
        match self {
            BodyBuf::Heap(v) => v.len(),
            BodyBuf::Mapped { len, .. } => *len,
        }
    }

    /// Bytes held, used or not: what the budget counts.
    pub fn capacity(&self) -> usize {
        match self {
            BodyBuf::Heap(v) => v.capacity(),
            BodyBuf::Mapped { map, .. } => map.len(),
        }
    }

    /// Grows to exactly `capacity` bytes (moving to a map once large), keeping the content.
    pub fn grow_to(&mut self, capacity: usize) {
        if capacity <= self.capacity() {
            return;
        }
        let mut bigger = BodyBuf::with_capacity(capacity);
        bigger.extend_from_slice(self.as_slice());
        *self = bigger;
    }

    /// Appends `bytes`, which must fit the capacity (a heap buffer grows if they do not).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        match self {
            BodyBuf::Heap(v) => v.extend_from_slice(bytes),
            BodyBuf::Mapped { map, len } => {
                if *len + bytes.len() > map.len() {
                    let mut heap = Vec::with_capacity(*len + bytes.len());
                    heap.extend_from_slice(&map[..*len]);
                    heap.extend_from_slice(bytes);
                    *self = BodyBuf::Heap(heap);
                    return;
                }
                map[*len..*len + bytes.len()].copy_from_slice(bytes);
                *len += bytes.len();
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            BodyBuf::Heap(v) => v,
            BodyBuf::Mapped { map, len } => &map[..*len],
        }
    }

    pub fn into_bytes(self) -> Bytes {
        match self {
            BodyBuf::Heap(v) => Bytes::from(v),
            BodyBuf::Mapped { map, len } => Bytes::from_owner(map).slice(..len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_are_mapped_small_ones_are_not_and_both_keep_their_bytes() {
        let mut small = BodyBuf::with_capacity(1000);
        assert!(matches!(small, BodyBuf::Heap(_)));
        small.extend_from_slice(b"abc");
        assert_eq!(&small.into_bytes()[..], b"abc");

        let mut large = BodyBuf::with_capacity(MAPPED_FROM);
        assert!(matches!(large, BodyBuf::Mapped { .. }));
        large.extend_from_slice(&[7; 1000]);
        large.extend_from_slice(b"end");
        assert_eq!(large.len(), 1003);
        let bytes = large.into_bytes();
        assert_eq!(bytes.len(), 1003);
        assert_eq!(&bytes[1000..], b"end");
    }

    #[test]
    fn growing_keeps_the_content_and_moves_to_a_map() {
        let mut b = BodyBuf::with_capacity(10);
        b.extend_from_slice(b"0123456789");
        b.grow_to(MAPPED_FROM * 2);
        assert!(matches!(b, BodyBuf::Mapped { .. }));
        assert_eq!(b.capacity(), MAPPED_FROM * 2);
        b.extend_from_slice(b"x");
        assert_eq!(&b.into_bytes()[..], b"0123456789x");
    }
}
