//! Numbers and sizes as the report's tables print them, below the report
//! so that the workloads that write their own tables (`cpath`, `global`,
//! `programs`) and the report that includes them share one format.

/// A number with sensible precision for a table.
pub fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A size in bytes, in KiB when it is a whole number of them.
pub fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}
