//! Matrix products through cuBLAS. Tensors are row-major and cuBLAS is column-major: a row-major
//! matrix is its transpose in column-major, so C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ with
//! the operands swapped and no data moved. f32 runs in plain FP32 (no TF32) so it can be compared with
//! the CPU; bf16/fp16 accumulate in f32 on the tensor cores.

use super::{CudaContext, CudaStorage};
use crate::tensor::{DType, Storage, Tensor};
use crate::{Error, Result};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::CudaStream;
use half::{bf16, f16};
use std::sync::{Arc, Mutex, OnceLock};

/// The cuBLAS handle, created on first use so a missing libcublas only fails the ops that need it.
pub struct Blas {
    stream: Arc<CudaStream>,
    handle: OnceLock<std::result::Result<Mutex<CudaBlas>, String>>,
}

impl Blas {
    pub fn new(stream: Arc<CudaStream>) -> Blas {
        Blas { stream, handle: OnceLock::new() }
    }

    fn handle(&self) -> Result<std::sync::MutexGuard<'_, CudaBlas>> {
        let h = self.handle.get_or_init(|| {
            // SAFETY: only tries to dlopen libcublas.
            if !unsafe { cudarc::cublas::sys::is_culib_present() } {
                return Err("libcublas (CUDA 13) not found on the loader path (LD_LIBRARY_PATH)".into());
            }
            let stream = self.stream.clone();
            std::panic::catch_unwind(move || CudaBlas::new(stream))
                .map_err(|_| "cuBLAS could not be loaded".to_string())?
                .map(Mutex::new)
                .map_err(|e| format!("cannot create a cuBLAS handle: {e:?}"))
        });
        match h {
            Ok(m) => m.lock().map_err(|_| Error::Device("cuBLAS lock poisoned".into())),
            Err(msg) => Err(Error::Device(msg.clone())),
        }
    }
}

/// The column-major GEMM that computes row-major C[m, n] = op(A)·op(B).
fn config<T>(
    m: usize,
    n: usize,
    k: usize,
    a_cols: usize,
    b_cols: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: T,
    beta: T,
) -> Result<GemmConfig<T>> {
    let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
    let int = |v: usize| {
        i32::try_from(v).map_err(|_| Error::Shape(format!("matmul dimension {v} exceeds cuBLAS's int range")))
    };
    Ok(GemmConfig {
        transa: op(trans_b),
        transb: op(trans_a),
        m: int(n)?,
        n: int(m)?,
        k: int(k)?,
        alpha,
        lda: int(b_cols.max(1))?,
        ldb: int(a_cols.max(1))?,
        beta,
        ldc: int(n.max(1))?,
    })
}

pub fn matmul(
    ctx: &Arc<CudaContext>,
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
) -> Result<Tensor> {
    let (ar, ac) = a.shape().matrix("matmul")?;
    let (br, bc) = b.shape().matrix("matmul")?;
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
    if k != k2 || a.dtype() != b.dtype() {
        return Err(Error::Shape(format!(
            "matmul: {} {} (transposed: {trans_a}) and {} {} (transposed: {trans_b})",
            a.shape(),
            a.dtype(),
            b.shape(),
            b.dtype()
        )));
    }
    let dtype = a.dtype();
    let mut out: CudaStorage = ctx.alloc_storage(dtype, m * n)?;
    if m * n == 0 {
        return Tensor::from_storage([m, n], Storage::Cuda(out));
    }
    let (sa, sb) = (ctx.storage(a)?, ctx.storage(b)?);
    ctx.kernels.note("cublas_gemm");
    let blas = ctx.blas.handle()?;
    let err = |e: cudarc::cublas::result::CublasError| Error::Device(format!("cuBLAS GEMM failed: {e:?}"));
    // SAFETY: shapes were checked above; views cover exactly the tensors' elements.
    unsafe {
        match dtype {
            DType::F32 => {
                let cfg = config(m, n, k, ac, bc, trans_a, trans_b, 1.0f32, 0.0f32)?;
                let mut ov = out.view_mut::<f32>()?;
                blas.gemm(cfg, &sb.view::<f32>()?, &sa.view::<f32>()?, &mut ov).map_err(err)?;
            }
            DType::F64 => {
                let cfg = config(m, n, k, ac, bc, trans_a, trans_b, 1.0f64, 0.0f64)?;
                let mut ov = out.view_mut::<f64>()?;
                blas.gemm(cfg, &sb.view::<f64>()?, &sa.view::<f64>()?, &mut ov).map_err(err)?;
            }
            DType::BF16 => {
                let cfg = config(m, n, k, ac, bc, trans_a, trans_b, bf16::ONE, bf16::ZERO)?;
                let mut ov = out.view_mut::<bf16>()?;
                blas.gemm(cfg, &sb.view::<bf16>()?, &sa.view::<bf16>()?, &mut ov).map_err(err)?;
            }
            DType::F16 => {
                let cfg = config(m, n, k, ac, bc, trans_a, trans_b, f16::ONE, f16::ZERO)?;
                let mut ov = out.view_mut::<f16>()?;
                blas.gemm(cfg, &sb.view::<f16>()?, &sa.view::<f16>()?, &mut ov).map_err(err)?;
            }
            DType::I64 => return Err(Error::Unsupported("matmul of i64 tensors".into())),
        }
    }
    drop(blas);
    Tensor::from_storage([m, n], Storage::Cuda(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column-major GEMM as cuBLAS defines it, on the host: C = op(A)·op(B), C is m x n with ldc.
    fn colmajor_gemm(cfg: &GemmConfig<f64>, a: &[f64], b: &[f64]) -> Vec<f64> {
        let (m, n, k) = (cfg.m as usize, cfg.n as usize, cfg.k as usize);
        let (lda, ldb, ldc) = (cfg.lda as usize, cfg.ldb as usize, cfg.ldc as usize);
        let ta = cfg.transa == cublasOperation_t::CUBLAS_OP_T;
        let tb = cfg.transb == cublasOperation_t::CUBLAS_OP_T;
        let mut c = vec![0.0; ldc * n];
        for j in 0..n {
            for i in 0..m {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { a[p + i * lda] } else { a[i + p * lda] };
                    let bv = if tb { b[j + p * ldb] } else { b[p + j * ldb] };
                    s += av * bv;
                }
                c[i + j * ldc] = cfg.alpha * s + cfg.beta * c[i + j * ldc];
            }
        }
        c
    }

    /// The operand swap gives the row-major product for every transpose combination.
    #[test]
    fn row_major_trick_matches_a_direct_product() {
        let (m, k, n) = (5, 3, 4);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            let a: Vec<f64> = (0..ar * ac).map(|i| (i * 7 % 11) as f64 - 5.0).collect();
            let b: Vec<f64> = (0..br * bc).map(|i| (i * 5 % 13) as f64 - 6.0).collect();
            let cfg = config(m, n, k, ac, bc, ta, tb, 1.0f64, 0.0f64).unwrap();
            // cuBLAS gets B's memory as its first operand and A's as its second.
            let got = colmajor_gemm(&cfg, &b, &a);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| {
                            let av = if ta { a[p * ac + i] } else { a[i * ac + p] };
                            let bv = if tb { b[j * bc + p] } else { b[p * bc + j] };
                            av * bv
                        })
                        .sum();
                    // Column-major C^T with ldc = n is row-major C.
                    assert_eq!(got[i * n + j], want, "ta {ta} tb {tb} at ({i}, {j})");
                }
            }
        }
    }
}
