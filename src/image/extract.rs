//! One file out of an image's layers, as the container would see it.
//!
//! A pass over the layers, bottom first, tracks what the wanted path is
//! after each layer:
//! 1. a regular file at the path: its contents are copied into a temporary
//!    file beside the destination (a later layer's copy replaces it);
//! 2. a whiteout `.wh.NAME` of the path or of a directory above it, an
//!    opaque marker `.wh..wh..opq` in a directory above it, or a directory
//!    above it replaced by a file: the path is gone (until a later layer
//!    adds it again); entries of the same layer still count;
//! 3. a symbolic link at the path or at a directory above it, or a hard
//!    link at the path: the pass ends with the link's target, resolved
//!    inside the image (`..` stops at the image's root; absolute targets
//!    are the image's), and another pass looks for that;
//! 4. each layer is hashed as it is read and checked against its
//!    `diff_id`, so the file comes from the image the config describes.
//!
//! Then the temporary file is fsynced, made 0755, renamed over the
//! destination, and the directory fsynced. Nothing outside the
//! destination's directory is written and nothing on the host is followed;
//! memory stays bounded (copies go through fixed buffers) whatever the
//! layers' sizes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{hex, inspect, ImageArchive};
use crate::durable;
use crate::error::{Error, Result};

/// Links followed (symbolic, hard, or of a directory above) at most.
const MAX_LINKS: usize = 16;

/// Extract `path_in_image` (e.g. `/agent`) from the image archive
/// `tarball` into `dest`, atomically and durably, mode 0755. Returns what
/// the archive holds.
pub fn extract_file(tarball: &Path, path_in_image: &str, dest: &Path) -> Result<ImageArchive> {
    let archive = inspect(tarball)?;
    extract_from(&archive, path_in_image, dest)?;
    Ok(archive)
}

/// What the wanted path is after the layers read so far.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Absent,
    /// A regular file, whose contents are in the temporary file.
    File,
    Symlink(String),
    /// A hard link to this archive path, made in layer `layer`.
    HardLink {
        target: String,
        layer: usize,
    },
    /// A symbolic link at the directory `depth` components deep.
    LinkAbove {
        depth: usize,
        target: String,
    },
    NotAFile(&'static str),
}

pub(super) fn extract_from(archive: &ImageArchive, path_in_image: &str, dest: &Path) -> Result<()> {
    let shown = path_in_image.to_string();
    let mut want = resolve(&[], path_in_image);
    if want.is_empty() {
        return Err(Error::Other(format!(
            "{}: {shown:?} names the image's root, not a file",
            archive.path.display()
        )));
    }
    let tmp = durable::temp_sibling(dest, "extract");
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&tmp)
        .map_err(Error::io("create temporary file for", dest))?;
    let result = (|| {
        let mut layers = archive.layers.len();
        for _ in 0..=MAX_LINKS {
            match scan(archive, &want, layers, &mut out, &tmp)? {
                State::File => return Ok(()),
                State::Absent => {
                    return Err(Error::Other(format!(
                        "{}: {shown} is not in the image{}",
                        archive.path.display(),
                        via(&want, path_in_image)
                    )))
                }
                State::NotAFile(kind) => {
                    return Err(Error::Other(format!(
                        "{}: {shown} is {kind} in the image, not a regular file{}",
                        archive.path.display(),
                        via(&want, path_in_image)
                    )))
                }
                State::Symlink(target) => {
                    want = resolve(&want[..want.len() - 1], &target);
                }
                State::HardLink { target, layer } => {
                    want = resolve(&[], &target);
                    layers = layer + 1;
                }
                State::LinkAbove { depth, target } => {
                    let mut next = resolve(&want[..depth - 1], &target);
                    next.extend_from_slice(&want[depth..]);
                    want = next;
                }
            }
            if want.is_empty() {
                return Err(Error::Other(format!(
                    "{}: {shown} leads to the image's root, not a file",
                    archive.path.display()
                )));
            }
        }
        Err(Error::Other(format!(
            "{}: {shown}: more than {MAX_LINKS} links to follow in the image",
            archive.path.display()
        )))
    })()
    .and_then(|()| {
        out.sync_all().map_err(Error::io("fsync", &tmp))?;
        out.set_permissions(fs::Permissions::from_mode(0o755))
            .map_err(Error::io("set mode of", &tmp))?;
        fs::rename(&tmp, dest).map_err(Error::io("rename extracted file into place", dest))?;
        durable::sync_parent(dest)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// ` (reached through links as /x/y)` when links moved the path.
fn via(want: &[String], asked: &str) -> String {
    let now = format!("/{}", want.join("/"));
    if resolve(&[], asked) == want {
        String::new()
    } else {
        format!(" (reached through links as {now})")
    }
}

/// One pass over the first `layers` layers for `want`.
fn scan(
    archive: &ImageArchive,
    want: &[String],
    layers: usize,
    out: &mut File,
    tmp: &Path,
) -> Result<State> {
    let mut state = State::Absent;
    for (i, layer) in archive.layers.iter().take(layers).enumerate() {
        let what = format!("layer {} ({})", i + 1, layer.member);
        let io_err =
            |e: io::Error| Error::Other(format!("{}: read {what}: {e}", archive.path.display()));
        let mut f =
            File::open(&archive.path).map_err(Error::io("open image archive", &archive.path))?;
        f.seek(SeekFrom::Start(layer.offset)).map_err(io_err)?;
        let mut raw = BufReader::with_capacity(256 * 1024, f.take(layer.size));
        let head = raw.fill_buf().map_err(io_err)?;
        let hashed = if head.starts_with(&[0x1f, 0x8b]) {
            Hashing::new(Box::new(flate2::read::MultiGzDecoder::new(raw)))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(Error::Other(format!(
                "{}: {what} is zstd-compressed, which is not supported (gzip and plain tar are)",
                archive.path.display()
            )));
        } else {
            Hashing::new(Box::new(raw))
        };
        let mut ar = tar::Archive::new(hashed);
        let mut found: Option<State> = None;
        let mut hidden = false;
        let mut link_above: Option<(usize, String)> = None;
        let mut dir_over_link = false;
        for entry in ar.entries().map_err(io_err)? {
            let mut entry = entry.map_err(io_err)?;
            let Some(comps) = components(&entry.path_bytes()) else {
                continue;
            };
            let Some((name, parent)) = comps.split_last() else {
                continue;
            };
            if name == ".wh..wh..opq" {
                if is_proper_prefix(parent, want) {
                    hidden = true;
                }
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let mut w = parent.to_vec();
                w.push(gone.to_string());
                if want.starts_with(&w) {
                    hidden = true;
                }
                continue;
            }
            let kind = entry.header().entry_type();
            let link = || {
                entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default()
            };
            if comps == want {
                found = Some(
                    if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
                        out.set_len(0)
                            .and_then(|_| out.seek(SeekFrom::Start(0)))
                            .map_err(Error::io("truncate", tmp))?;
                        io::copy(&mut entry, out).map_err(|e| {
                            Error::Other(format!(
                                "{}: copy {} out of {what} into {}: {e}",
                                archive.path.display(),
                                String::from_utf8_lossy(&entry.path_bytes()),
                                tmp.display()
                            ))
                        })?;
                        State::File
                    } else if kind.is_symlink() {
                        State::Symlink(link())
                    } else if kind.is_hard_link() {
                        State::HardLink {
                            target: link(),
                            layer: i,
                        }
                    } else if kind.is_dir() {
                        State::NotAFile("a directory")
                    } else {
                        State::NotAFile("a special file")
                    },
                );
            } else if is_proper_prefix(&comps, want) {
                if kind.is_dir() {
                    if matches!(&state, State::LinkAbove { depth, .. } if *depth == comps.len()) {
                        dir_over_link = true;
                    }
                } else if kind.is_symlink() {
                    link_above = Some((comps.len(), link()));
                } else {
                    // A file (or a hard link to one) where a directory
                    // above the path was: the path is gone.
                    hidden = true;
                }
            }
        }
        // Hash what the tar reader left unread (end-of-archive padding).
        let mut rest = ar.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(io_err)?;
        let got = format!("sha256:{}", hex(&rest.hasher.finalize()));
        if got != layer.diff_id {
            return Err(Error::Other(format!(
                "{}: {what} does not match its diff_id in the image config (it hashes to {got}, the config says {})",
                archive.path.display(),
                layer.diff_id
            )));
        }
        state = if let Some(f) = found {
            f
        } else if let Some((depth, target)) = link_above {
            State::LinkAbove { depth, target }
        } else if hidden || dir_over_link {
            State::Absent
        } else {
            state
        };
    }
    out.flush().map_err(Error::io("write", tmp))?;
    Ok(state)
}

/// A reader that hashes what passes through it.
struct Hashing {
    inner: Box<dyn Read>,
    hasher: Sha256,
}

impl Hashing {
    fn new(inner: Box<dyn Read>) -> Hashing {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A layer entry's path as components, or `None` when it climbs out of
/// the layer with `..` (such an entry is ignored, never followed).
fn components(raw: &[u8]) -> Option<Vec<String>> {
    let s = String::from_utf8_lossy(raw);
    let mut out = Vec::new();
    for p in s.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => out.push(p.to_string()),
        }
    }
    Some(out)
}

/// `target` as seen from the directory `base` (components from the image
/// root), resolved inside the image: `..` at the root stays at the root.
fn resolve(base: &[String], target: &str) -> Vec<String> {
    let mut out: Vec<String> = if target.starts_with('/') {
        Vec::new()
    } else {
        base.to_vec()
    };
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_string()),
        }
    }
    out
}

fn is_proper_prefix(prefix: &[String], path: &[String]) -> bool {
    prefix.len() < path.len() && path.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn links_resolve_inside_the_image() {
        assert_eq!(resolve(&[], "/agent"), v(&["agent"]));
        assert_eq!(
            resolve(&v(&["usr", "bin"]), "../lib/x"),
            v(&["usr", "lib", "x"])
        );
        assert_eq!(
            resolve(&v(&["a"]), "../../../etc/passwd"),
            v(&["etc", "passwd"])
        );
        assert_eq!(resolve(&v(&["a"]), "/b/./c/"), v(&["b", "c"]));
        assert_eq!(components(b"./usr/bin/x"), Some(v(&["usr", "bin", "x"])));
        assert_eq!(components(b"../etc/x"), None);
        assert!(is_proper_prefix(&v(&["usr"]), &v(&["usr", "x"])));
        assert!(!is_proper_prefix(&v(&["usr"]), &v(&["usr"])));
    }
}
