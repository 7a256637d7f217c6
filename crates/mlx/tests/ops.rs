//! Each op against values computed by hand or by a plain Rust loop.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mlx::{Array, Dtype, MlxError, bf16, f16};

type Unary = fn(f32) -> f32;
type Binary = fn(f32, f32) -> f32;

fn arr(data: &[f32], shape: &[i32]) -> Array {
    Array::from_slice(data, shape).unwrap()
}

#[test]
fn from_slice_round_trips_every_plain_dtype() {
    let a = Array::from_slice(&[1u8, 2, 255], &[3]).unwrap();
    assert_eq!(a.to_vec::<u8>().unwrap(), vec![1, 2, 255]);
    let a = Array::from_slice(&[-1i32, 7, 1 << 30], &[3, 1]).unwrap();
    assert_eq!(a.shape(), vec![3, 1]);
    assert_eq!(a.dtype(), Dtype::I32);
    assert_eq!(a.to_vec::<i32>().unwrap(), vec![-1, 7, 1 << 30]);
    let a = Array::from_slice(&[u32::MAX, 0], &[2]).unwrap();
    assert_eq!(a.to_vec::<u32>().unwrap(), vec![u32::MAX, 0]);
    let a = Array::from_slice(&[true, false, true], &[3]).unwrap();
    assert_eq!(a.to_vec::<bool>().unwrap(), vec![true, false, true]);
    let a = Array::from_slice(&[i64::MIN, 3], &[2]).unwrap();
    assert_eq!(a.to_vec::<i64>().unwrap(), vec![i64::MIN, 3]);
    let halves = [f16::from_f32(0.5), f16::from_f32(-2.0)];
    let a = Array::from_slice(&halves, &[2]).unwrap();
    assert_eq!(a.to_vec::<f16>().unwrap(), halves.to_vec());
    let brains = [bf16::from_f32(1.5), bf16::from_f32(-3.0)];
    let a = Array::from_slice(&brains, &[1, 2]).unwrap();
    assert_eq!(a.nbytes(), 4);
    assert_eq!(a.to_vec::<bf16>().unwrap(), brains.to_vec());
}

#[test]
fn from_bytes_reads_little_endian_elements() {
    let bytes: Vec<u8> = [1.0f32, -2.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let a = Array::from_bytes(&bytes, &[2], Dtype::F32).unwrap();
    assert_eq!(f32s(&a), vec![1.0, -2.5]);
    assert!(Array::from_bytes(&bytes, &[3], Dtype::F32).is_err());
}

#[test]
fn from_slice_rejects_data_that_does_not_fill_the_shape() {
    let err = Array::from_slice(&[1.0f32, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert!(matches!(err, MlxError::InvalidArgument(_)), "{err}");
    assert!(Array::from_slice(&[1.0f32], &[-1]).is_err());
}

#[test]
fn item_reads_one_element_and_refuses_more() {
    assert_eq!(Array::scalar(42i32).unwrap().item::<i32>().unwrap(), 42);
    assert!(arr(&[1.0, 2.0], &[2]).item::<f32>().is_err());
}

#[test]
fn reading_with_the_wrong_type_is_an_error() {
    let err = arr(&[1.0], &[1]).to_vec::<i32>().unwrap_err();
    assert_eq!(
        err,
        MlxError::DtypeMismatch {
            expected: Dtype::I32,
            actual: Dtype::F32
        }
    );
}

#[test]
fn add_broadcasts_a_row_over_a_matrix() {
    let m = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let row = arr(&[10.0, 20.0, 30.0], &[3]);
    let sum = m.add(&row).unwrap();
    assert_eq!(sum.shape(), vec![2, 3]);
    assert_f32_eq(&f32s(&sum), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
}

#[test]
fn binary_arithmetic_matches_rust() {
    let a = [1.5f32, -2.0, 3.0, 0.25];
    let b = [0.5f32, 4.0, -1.5, 2.0];
    let (x, y) = (arr(&a, &[4]), arr(&b, &[4]));
    let cases: [(Array, Binary); 7] = [
        (x.add(&y).unwrap(), |p, q| p + q),
        (x.subtract(&y).unwrap(), |p, q| p - q),
        (x.multiply(&y).unwrap(), |p, q| p * q),
        (x.divide(&y).unwrap(), |p, q| p / q),
        (x.maximum(&y).unwrap(), f32::max),
        (x.minimum(&y).unwrap(), f32::min),
        (x.remainder(&y).unwrap(), |p, q| p - q * (p / q).floor()),
    ];
    for (got, f) in cases {
        let want: Vec<f32> = a.iter().zip(&b).map(|(p, q)| f(*p, *q)).collect();
        assert_f32_eq(&f32s(&got), &want);
    }
    let p = arr(&[2.0, 3.0], &[2])
        .power(&arr(&[3.0, 0.5], &[2]))
        .unwrap();
    assert_f32_eq(&f32s(&p), &[8.0, 3.0f32.sqrt()]);
    let fd = arr(&[7.0, -7.0], &[2])
        .floor_divide(&arr(&[2.0, 2.0], &[2]))
        .unwrap();
    assert_f32_eq(&f32s(&fd), &[3.0, -4.0]);
}

#[test]
fn unary_math_matches_rust() {
    let a = [0.3f32, 1.7, 2.2, 0.9];
    let x = arr(&a, &[2, 2]);
    let cases: [(Array, Unary); 14] = [
        (x.negative().unwrap(), |v| -v),
        (x.abs().unwrap(), f32::abs),
        (x.exp().unwrap(), f32::exp),
        (x.log().unwrap(), f32::ln),
        (x.sqrt().unwrap(), f32::sqrt),
        (x.rsqrt().unwrap(), |v| 1.0 / v.sqrt()),
        (x.square().unwrap(), |v| v * v),
        (x.sigmoid().unwrap(), |v| 1.0 / (1.0 + (-v).exp())),
        (x.tanh().unwrap(), f32::tanh),
        (x.sin().unwrap(), f32::sin),
        (x.cos().unwrap(), f32::cos),
        (x.reciprocal().unwrap(), |v| 1.0 / v),
        (x.floor().unwrap(), f32::floor),
        (x.log1p().unwrap(), f32::ln_1p),
    ];
    for (got, f) in cases {
        assert_eq!(got.shape(), vec![2, 2]);
        let want: Vec<f32> = a.iter().map(|v| f(*v)).collect();
        assert_f32_eq(&f32s(&got), &want);
    }
    assert_f32_eq(&f32s(&x.ceil().unwrap()), &[1.0, 2.0, 3.0, 1.0]);
    // erf(0.5) = 0.5204998778130465, erf(-1) = -0.8427007929497149
    let e = arr(&[0.5, -1.0], &[2]).erf().unwrap();
    assert_f32_eq(&f32s(&e), &[0.520_499_9, -0.842_700_8]);
}

#[test]
fn activations_follow_their_formulas() {
    let a = [-2.0f32, -0.5, 0.0, 0.7, 3.0];
    let x = arr(&a, &[5]);
    let silu: Vec<f64> = a
        .iter()
        .map(|&v| v as f64 / (1.0 + (-v as f64).exp()))
        .collect();
    assert_close(&f32s(&x.silu().unwrap()), &silu, 1e-6);
    // erf values for a / sqrt(2), from the closed form.
    let erf = [
        -0.954_499_736_103_641_6,
        -0.382_924_922_548_026,
        0.0,
        0.516_073_138_316_808_6,
        0.997_300_203_936_739_8,
    ];
    let gelu: Vec<f64> = a
        .iter()
        .zip(erf)
        .map(|(&v, e)| v as f64 * (1.0 + e) / 2.0)
        .collect();
    assert_close(&f32s(&x.gelu().unwrap()), &gelu, 1e-6);
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let approx: Vec<f64> = a
        .iter()
        .map(|&v| {
            let v = v as f64;
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        })
        .collect();
    assert_close(&f32s(&x.gelu_approx().unwrap()), &approx, 1e-6);
}

#[test]
fn comparisons_and_logic_give_booleans() {
    let x = arr(&[1.0, 2.0, 3.0], &[3]);
    let y = arr(&[2.0, 2.0, 2.0], &[3]);
    let b = |a: Array| a.to_vec::<bool>().unwrap();
    assert_eq!(b(x.less(&y).unwrap()), [true, false, false]);
    assert_eq!(b(x.less_equal(&y).unwrap()), [true, true, false]);
    assert_eq!(b(x.greater(&y).unwrap()), [false, false, true]);
    assert_eq!(b(x.greater_equal(&y).unwrap()), [false, true, true]);
    assert_eq!(b(x.equal(&y).unwrap()), [false, true, false]);
    assert_eq!(b(x.not_equal(&y).unwrap()), [true, false, true]);
    let p = Array::from_slice(&[true, true, false], &[3]).unwrap();
    let q = Array::from_slice(&[true, false, false], &[3]).unwrap();
    assert_eq!(b(p.logical_and(&q).unwrap()), [true, false, false]);
    assert_eq!(b(p.logical_or(&q).unwrap()), [true, true, false]);
    assert_eq!(b(p.logical_not().unwrap()), [false, false, true]);
    assert!(p.any(&[], false).unwrap().item::<bool>().unwrap());
    assert!(!p.all(&[], false).unwrap().item::<bool>().unwrap());
}

#[test]
fn matmul_matches_a_naive_product() {
    let (a, av) = random_array(&[5, 7], 1);
    let (b, bv) = random_array(&[7, 3], 2);
    let c = a.matmul(&b).unwrap();
    assert_eq!(c.shape(), vec![5, 3]);
    assert_close(&f32s(&c), &matmul_ref(&av, &bv, 5, 7, 3), 1e-6);
}

#[test]
fn addmm_adds_the_scaled_product_to_a_bias() {
    let (a, av) = random_array(&[3, 4], 30);
    let (b, bv) = random_array(&[4, 2], 31);
    let bias = arr(&[1.0, -2.0], &[2]);
    let got = f32s(&a.addmm(&b, &bias, 2.0, 0.5).unwrap());
    let prod = matmul_ref(&av, &bv, 3, 4, 2);
    let want: Vec<f64> = prod
        .iter()
        .enumerate()
        .map(|(i, p)| 2.0 * p + 0.5 * [1.0, -2.0][i % 2])
        .collect();
    assert_close(&got, &want, 1e-6);
}

#[test]
fn matmul_batches_and_broadcasts() {
    let (a, av) = random_array(&[2, 4, 6], 3);
    let (b, bv) = random_array(&[6, 5], 4);
    let c = a.matmul(&b).unwrap();
    assert_eq!(c.shape(), vec![2, 4, 5]);
    let mut want = matmul_ref(&av[..24], &bv, 4, 6, 5);
    want.extend(matmul_ref(&av[24..], &bv, 4, 6, 5));
    assert_close(&f32s(&c), &want, 1e-6);
}

#[test]
fn reductions_reduce_the_requested_axes() {
    let x = arr(&[1.0, 5.0, 3.0, -4.0, 2.0, 6.0], &[2, 3]);
    assert_f32_eq(&f32s(&x.sum(&[], false).unwrap()), &[13.0]);
    assert_f32_eq(&f32s(&x.sum(&[1], false).unwrap()), &[9.0, 4.0]);
    let kept = x.sum(&[0], true).unwrap();
    assert_eq!(kept.shape(), vec![1, 3]);
    assert_f32_eq(&f32s(&kept), &[-3.0, 7.0, 9.0]);
    assert_f32_eq(&f32s(&x.mean(&[1], false).unwrap()), &[3.0, 4.0 / 3.0]);
    assert_f32_eq(&f32s(&x.max(&[1], false).unwrap()), &[5.0, 6.0]);
    assert_f32_eq(&f32s(&x.min(&[0], false).unwrap()), &[-4.0, 2.0, 3.0]);
    assert_f32_eq(&f32s(&x.prod(&[1], false).unwrap()), &[15.0, -48.0]);
    let lse: Vec<f32> = [[1.0f32, 5.0, 3.0], [-4.0, 2.0, 6.0]]
        .iter()
        .map(|r| r.iter().map(|v| v.exp()).sum::<f32>().ln())
        .collect();
    assert_f32_eq(&f32s(&x.logsumexp(&[1], false).unwrap()), &lse);
    let am = x.argmax(1, false).unwrap();
    assert_eq!(am.dtype(), Dtype::U32);
    assert_eq!(am.to_vec::<u32>().unwrap(), [1, 2]);
    assert_eq!(
        x.argmin(0, false).unwrap().to_vec::<u32>().unwrap(),
        [1, 1, 0]
    );
}

#[test]
fn softmax_equals_exp_over_sum() {
    let (x, xv) = random_array(&[3, 8], 5);
    let s = f32s(&x.softmax(-1, false).unwrap());
    let mut want = Vec::new();
    for row in xv.chunks(8) {
        let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let z: f64 = row.iter().map(|v| (*v as f64 - m).exp()).sum();
        want.extend(row.iter().map(|v| (*v as f64 - m).exp() / z));
    }
    assert_close(&s, &want, 1e-6);
    let p = f32s(&x.softmax(-1, true).unwrap());
    assert_close(&p, &want, 1e-6);
}

#[test]
fn sort_and_argsort_order_each_row() {
    let x = arr(&[3.0, 1.0, 2.0, -1.0, 9.0, 0.0], &[2, 3]);
    assert_f32_eq(
        &f32s(&x.sort(-1).unwrap()),
        &[1.0, 2.0, 3.0, -1.0, 0.0, 9.0],
    );
    assert_eq!(
        x.argsort(-1).unwrap().to_vec::<u32>().unwrap(),
        [1, 2, 0, 0, 2, 1]
    );
}

#[test]
fn argpartition_puts_the_kth_element_in_its_sorted_place() {
    let data = random_vec(17, 6);
    let x = arr(&data, &[17]);
    let idx = x.argpartition(5, 0).unwrap().to_vec::<u32>().unwrap();
    let mut sorted = data.clone();
    sorted.sort_by(f32::total_cmp);
    let kth = data[idx[5] as usize];
    assert_eq!(kth, sorted[5]);
    assert!(idx[..5].iter().all(|&i| data[i as usize] <= kth));
    assert!(idx[6..].iter().all(|&i| data[i as usize] >= kth));
}

#[test]
fn topk_returns_the_k_largest() {
    let data = random_vec(20, 7);
    let top = f32s(&arr(&data, &[20]).topk(4, 0).unwrap());
    let mut got = top.clone();
    got.sort_by(|a, b| b.total_cmp(a));
    let mut want = data.clone();
    want.sort_by(|a, b| b.total_cmp(a));
    assert_f32_eq(&got, &want[..4]);
}

#[test]
fn cumsum_scans_forward_backward_and_exclusive() {
    let x = arr(&[1.0, 2.0, 3.0, 4.0], &[4]);
    assert_f32_eq(
        &f32s(&x.cumsum(0, false, true).unwrap()),
        &[1.0, 3.0, 6.0, 10.0],
    );
    assert_f32_eq(
        &f32s(&x.cumsum(0, true, true).unwrap()),
        &[10.0, 9.0, 7.0, 4.0],
    );
    assert_f32_eq(
        &f32s(&x.cumsum(0, false, false).unwrap()),
        &[0.0, 1.0, 3.0, 6.0],
    );
}

#[test]
fn where_selects_by_condition() {
    let c = Array::from_slice(&[true, false, true], &[3]).unwrap();
    let x = arr(&[1.0, 2.0, 3.0], &[3]);
    let y = Array::scalar(-1.0f32).unwrap();
    assert_f32_eq(&f32s(&mlx::where_(&c, &x, &y).unwrap()), &[1.0, -1.0, 3.0]);
}

#[test]
fn astype_converts_and_scalar_like_keeps_the_dtype() {
    let x = arr(&[1.7, -2.7, 3.2], &[3]);
    assert_eq!(
        x.astype(Dtype::I32).unwrap().to_vec::<i32>().unwrap(),
        [1, -2, 3]
    );
    let h = x.astype(Dtype::Bf16).unwrap();
    let back = f32s(&h.astype(Dtype::F32).unwrap());
    let want: Vec<f32> = [1.7f32, -2.7, 3.2]
        .iter()
        .map(|v| bf16::from_f32(*v).to_f32())
        .collect();
    assert_f32_eq(&back, &want);
    let s = h.scalar_like(2.0).unwrap();
    assert_eq!(s.dtype(), Dtype::Bf16);
    assert_eq!(h.multiply(&s).unwrap().dtype(), Dtype::Bf16);
}

#[test]
fn gather_and_scatter_along_axes() {
    let table = arr(&[0.0, 1.0, 10.0, 11.0, 20.0, 21.0], &[3, 2]);
    let idx = Array::from_slice(&[2i32, 0, 2], &[3]).unwrap();
    let rows = table.take(&idx, 0).unwrap();
    assert_eq!(rows.shape(), vec![3, 2]);
    assert_f32_eq(&f32s(&rows), &[20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
    let cols = Array::from_slice(&[1i32, 0, 1], &[3, 1]).unwrap();
    let picked = table.take_along_axis(&cols, 1).unwrap();
    assert_f32_eq(&f32s(&picked), &[1.0, 10.0, 21.0]);
    let values = arr(&[-1.0, -2.0, -3.0], &[3, 1]);
    let put = table.put_along_axis(&cols, &values, 1).unwrap();
    assert_f32_eq(&f32s(&put), &[0.0, -1.0, -2.0, 11.0, 20.0, -3.0]);
}

#[test]
fn shape_ops_move_elements_as_numpy_does() {
    let x = arr(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 3]);
    let t = x.t().unwrap();
    assert_eq!(t.shape(), vec![3, 2]);
    assert_f32_eq(&f32s(&t), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    let r = x.reshape(&[3, -1]).unwrap();
    assert_eq!(r.shape(), vec![3, 2]);
    assert_f32_eq(&f32s(&r), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let e = x.expand_dims(0).unwrap();
    assert_eq!(e.shape(), vec![1, 2, 3]);
    assert_eq!(e.squeeze(0).unwrap().shape(), vec![2, 3]);
    let p = e.transpose(&[2, 0, 1]).unwrap();
    assert_eq!(p.shape(), vec![3, 1, 2]);
    assert_eq!(e.swapaxes(0, -1).unwrap().shape(), vec![3, 2, 1]);
    let b = arr(&[1.0, 2.0], &[2, 1]).broadcast_to(&[2, 3]).unwrap();
    assert_f32_eq(&f32s(&b), &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    assert_eq!(x.dim(-1).unwrap(), 3);
    assert!(x.dim(2).is_err());
}

#[test]
fn slices_read_and_update_regions() {
    let x = mlx::arange(0.0, 12.0, 1.0, Dtype::F32)
        .unwrap()
        .reshape(&[3, 4])
        .unwrap();
    let s = x.slice(&[1, 0], &[3, 4], &[1, 2]).unwrap();
    assert_eq!(s.shape(), vec![2, 2]);
    assert_f32_eq(&f32s(&s), &[4.0, 6.0, 8.0, 10.0]);
    assert_f32_eq(
        &f32s(&x.slice_axis(1, 1, 3).unwrap()),
        &[1.0, 2.0, 5.0, 6.0, 9.0, 10.0],
    );
    let u = mlx::full(&[3, 2], -1.0, Dtype::F32).unwrap();
    let y = x.slice_update_axis(&u, 1, 2, 4).unwrap();
    assert_f32_eq(
        &f32s(&y),
        &[
            0.0, 1.0, -1.0, -1.0, 4.0, 5.0, -1.0, -1.0, 8.0, 9.0, -1.0, -1.0,
        ],
    );
    // The source is unchanged: slice_update returns a new array.
    assert_eq!(f32s(&x)[2], 2.0);
    assert!(x.slice(&[0], &[1], &[1]).is_err());
}

#[test]
fn concatenate_stack_and_split_join_and_cut() {
    let a = arr(&[1.0, 2.0], &[1, 2]);
    let b = arr(&[3.0, 4.0, 5.0, 6.0], &[2, 2]);
    let c = mlx::concatenate(&[&a, &b], 0).unwrap();
    assert_eq!(c.shape(), vec![3, 2]);
    assert_f32_eq(&f32s(&c), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let s = mlx::stack(&[&a, &a], 0).unwrap();
    assert_eq!(s.shape(), vec![2, 1, 2]);
    let parts = c.split(&[1, 2], 0).unwrap();
    assert_eq!(parts.len(), 3);
    assert_f32_eq(&f32s(&parts[0]), &[1.0, 2.0]);
    assert_f32_eq(&f32s(&parts[2]), &[5.0, 6.0]);
}

#[test]
fn constructors_fill_and_count() {
    assert_f32_eq(&f32s(&mlx::zeros(&[2, 2], Dtype::F32).unwrap()), &[0.0; 4]);
    assert_eq!(
        mlx::ones(&[3], Dtype::I32)
            .unwrap()
            .to_vec::<i32>()
            .unwrap(),
        [1, 1, 1]
    );
    assert_f32_eq(
        &f32s(&mlx::full(&[2], 2.5, Dtype::F32).unwrap()),
        &[2.5, 2.5],
    );
    let r = mlx::arange(2.0, 11.0, 3.0, Dtype::I32).unwrap();
    assert_eq!(r.to_vec::<i32>().unwrap(), [2, 5, 8]);
}

#[test]
fn tril_and_triu_mask_triangles() {
    let ones = mlx::ones(&[3, 3], Dtype::F32).unwrap();
    assert_f32_eq(
        &f32s(&ones.tril(0).unwrap()),
        &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0],
    );
    assert_f32_eq(
        &f32s(&ones.triu(1).unwrap()),
        &[0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    );
}

#[test]
fn mlx_errors_come_back_as_err_not_aborts() {
    let a = arr(&[1.0, 2.0, 3.0], &[3]);
    let b = arr(&[1.0, 2.0], &[2]);
    let err = a.add(&b).unwrap_err();
    assert!(
        matches!(&err, MlxError::Mlx(m) if m.contains("broadcast")),
        "{err}"
    );
    let err = arr(&[1.0; 6], &[2, 3])
        .matmul(&arr(&[1.0; 6], &[2, 3]))
        .unwrap_err();
    assert!(matches!(err, MlxError::Mlx(_)), "{err}");
    assert!(a.reshape(&[2, 2]).is_err());
    assert!(a.softmax(3, false).is_err());
    assert!(a.take(&a, 0).is_err(), "float indices are rejected");
    // The binding stays usable after errors.
    assert_f32_eq(&f32s(&a.add(&a).unwrap()), &[2.0, 4.0, 6.0]);
}

#[test]
fn async_eval_then_read_gives_the_values() {
    let a = arr(&[1.0, 2.0], &[2]);
    let b = a.multiply(&a).unwrap();
    mlx::async_eval(&[&b]).unwrap();
    assert_f32_eq(&f32s(&b), &[1.0, 4.0]);
    let c = b.add(&a).unwrap();
    mlx::eval(&[&c, &b]).unwrap();
    assert_f32_eq(&f32s(&c), &[2.0, 6.0]);
}

#[test]
fn evaluated_arrays_can_move_to_another_thread() {
    let a = arr(&[1.0, 2.0, 3.0], &[3]);
    a.eval().unwrap();
    let sum = std::thread::spawn(move || a.sum(&[], false).unwrap().item::<f32>().unwrap())
        .join()
        .unwrap();
    assert_eq!(sum, 6.0);
}

#[test]
fn clones_share_the_graph_node() {
    let a = arr(&[1.0, 2.0], &[2]);
    let b = a.clone();
    drop(a);
    assert_f32_eq(&f32s(&b), &[1.0, 2.0]);
    assert!(format!("{b:?}").contains("F32"));
}
