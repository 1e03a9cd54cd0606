"""Decompression bombs, built in a fraction of a second: small files whose headers declare huge images."""

import struct
import zlib


def _zeros_zlib(size, chunk):
    """A zlib stream (RFC 1950) of `size` zero bytes.

    One deflate block of `chunk` zeros ended by a full flush (which resets the compressor, so the block does not
    refer back and can be repeated), repeated, then the remainder and an empty final block; the Adler-32 of n
    zero bytes is (n mod 65521) << 16 | 1 (RFC 1950 section 9: A = 1, B = n * A).
    """
    def block(n):
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(bytes(n)) + compressor.flush(zlib.Z_FULL_FLUSH)

    count, rest = divmod(size, chunk)
    raw = block(chunk) * count + (block(rest) if rest else b"") + b"\x03\x00"  # BFINAL=1 fixed-Huffman, EOB only
    return b"\x78\xda" + raw + struct.pack(">I", ((size % 65521) << 16) | 1)


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width, height):
    """A valid 8-bit grayscale PNG of all-zero pixels (IHDR, one IDAT of zero rows, IEND): 16000 x 16000 is
    about 250 KB and decodes to 256 MB (768 MB as RGB)."""
    row = 1 + width  # filter byte 0 + one byte per pixel
    idat = _zeros_zlib(row * height, row * max(1, min(height, 2 ** 24 // row)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # bit depth 8, grayscale, deflate, no interlace
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_header(width, height):
    """SOI, SOF0 (baseline, 8-bit, 3 components), SOS, a few bytes, EOI (ITU-T T.81 B.2): about 60 bytes that
    declare width x height (at most 65535 each)."""
    def segment(marker, data):
        return bytes([0xFF, marker]) + struct.pack(">H", len(data) + 2) + data

    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    sos = bytes([3]) + b"".join(bytes([i, 0]) for i in (1, 2, 3)) + bytes([0, 63, 0])
    return b"\xff\xd8" + segment(0xC0, sof) + segment(0xDA, sos) + bytes(16) + b"\xff\xd9"
