//! Shamir secret sharing over GF(2^8), the combine half of SOPS's
//! `shamir` package (after HashiCorp Vault's): each part is the share's
//! y-values followed by its x-coordinate byte; the secret is the Lagrange
//! interpolation at x = 0, byte by byte, in the AES field (x^8 + x^4 + x^3 +
//! x + 1).

use zeroize::Zeroizing;

fn mult(a: u8, b: u8) -> u8 {
    let mut r: u8 = 0;
    for i in (0..8).rev() {
        let bit = (b >> i) & 1;
        let high = r >> 7;
        r = (0u8.wrapping_sub(bit) & a) ^ (0u8.wrapping_sub(high) & 0x1b) ^ r.wrapping_add(r);
    }
    r
}

/// a^254 = a^-1 (and 0 for 0).
fn inverse(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u32;
    while e > 0 {
        if e & 1 == 1 {
            result = mult(result, base);
        }
        base = mult(base, base);
        e >>= 1;
    }
    result
}

fn div(a: u8, b: u8) -> u8 {
    mult(a, inverse(b))
}

fn interpolate(xs: &[u8], ys: &[u8]) -> u8 {
    let mut result = 0u8;
    for i in 0..xs.len() {
        let mut basis = 1u8;
        for j in 0..xs.len() {
            if i == j {
                continue;
            }
            // At x = 0: (0 + x_j) / (x_i + x_j).
            basis = mult(basis, div(xs[j], xs[i] ^ xs[j]));
        }
        result ^= mult(ys[i], basis);
    }
    result
}

/// Combines at least two parts of equal length (at least two bytes each,
/// distinct x-coordinates); `None` when they do not fit together.
pub(crate) fn combine(parts: &[Zeroizing<Vec<u8>>]) -> Option<Zeroizing<Vec<u8>>> {
    if parts.len() < 2 {
        return None;
    }
    let len = parts[0].len();
    if len < 2 || parts.iter().any(|p| p.len() != len) {
        return None;
    }
    let xs: Vec<u8> = parts.iter().map(|p| p[len - 1]).collect();
    for (i, x) in xs.iter().enumerate() {
        if xs[..i].contains(x) {
            return None;
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    let mut ys = Zeroizing::new(vec![0u8; parts.len()]);
    for (idx, byte) in secret.iter_mut().enumerate() {
        for (y, part) in ys.iter_mut().zip(parts) {
            *y = part[idx];
        }
        *byte = interpolate(&xs, &ys);
    }
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits like SOPS (a random polynomial per byte, x-coordinates 1..=n),
    /// with fixed coefficients.
    fn split(secret: &[u8], n: u8, threshold: usize) -> Vec<Zeroizing<Vec<u8>>> {
        (1..=n)
            .map(|x| {
                let mut part: Vec<u8> = secret
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| {
                        // s + c1 x + c2 x^2 + ...
                        let mut y = s;
                        let mut xp = 1u8;
                        for k in 1..threshold {
                            xp = mult(xp, x);
                            let c = (i as u8).wrapping_mul(31).wrapping_add(k as u8 * 17) | 1;
                            y ^= mult(c, xp);
                        }
                        y
                    })
                    .collect();
                part.push(x);
                Zeroizing::new(part)
            })
            .collect()
    }

    #[test]
    fn decrypt_shamir_field_and_combine() {
        for a in 1..=255u8 {
            assert_eq!(mult(a, inverse(a)), 1, "{a}");
        }
        assert_eq!(mult(0x57, 0x83), 0xc1); // FIPS-197 §4.2
        let secret: Vec<u8> = (0..32).map(|i| i * 7 + 3).collect();
        let parts = split(&secret, 3, 2);
        assert_eq!(&**combine(&parts[..2]).unwrap(), &secret[..]);
        assert_eq!(&**combine(&parts[1..]).unwrap(), &secret[..]);
        assert_eq!(&**combine(&parts).unwrap(), &secret[..]);
        assert!(combine(&parts[..1]).is_none());
        let dup = vec![parts[0].clone(), parts[0].clone()];
        assert!(combine(&dup).is_none());
    }
}
