//! Array operations: element-wise math with NumPy broadcasting, reductions,
//! shape manipulation and indexing, matmul, softmax, sorting and scans.
//! Each is one call into MLX's `mlx::core` ops; nothing is evaluated until a
//! result is read or `eval`ed.

use crate::array::call_array;
use crate::error::{MlxError, Result};
use crate::{Array, Dtype, ffi};

#[derive(Clone, Copy)]
#[repr(i32)]
enum Unary {
    Negative = 0,
    Abs = 1,
    Exp = 2,
    Log = 3,
    Sqrt = 4,
    Rsqrt = 5,
    Square = 6,
    Sigmoid = 7,
    Tanh = 8,
    Erf = 9,
    Sin = 10,
    Cos = 11,
    Reciprocal = 12,
    LogicalNot = 13,
    Floor = 14,
    Ceil = 15,
    Log1p = 16,
    Contiguous = 17,
}

#[derive(Clone, Copy)]
#[repr(i32)]
enum Binary {
    Add = 0,
    Subtract = 1,
    Multiply = 2,
    Divide = 3,
    Maximum = 4,
    Minimum = 5,
    Power = 6,
    Equal = 7,
    NotEqual = 8,
    Less = 9,
    LessEqual = 10,
    Greater = 11,
    GreaterEqual = 12,
    LogicalAnd = 13,
    LogicalOr = 14,
    Remainder = 15,
    FloorDivide = 16,
}

#[derive(Clone, Copy)]
#[repr(i32)]
enum Reduce {
    Sum = 0,
    Mean = 1,
    Max = 2,
    Min = 3,
    Prod = 4,
    LogSumExp = 5,
    All = 6,
    Any = 7,
}

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self) -> Result<Array> {
            call_array!(mlxs_unary(Unary::$op as i32, self.as_ptr()))
        }
    )*};
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self, other: &Array) -> Result<Array> {
            call_array!(mlxs_binary(Binary::$op as i32, self.as_ptr(), other.as_ptr()))
        }
    )*};
}

macro_rules! reduce_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        /// Reduces over `axes` (all axes when empty).
        pub fn $name(&self, axes: &[i32], keepdims: bool) -> Result<Array> {
            call_array!(mlxs_reduce(
                Reduce::$op as i32,
                self.as_ptr(),
                axes.as_ptr(),
                axes.len(),
                keepdims,
            ))
        }
    )*};
}

/// Element-wise operations.
impl Array {
    unary_methods!(
        /// `-x`.
        negative => Negative,
        /// `|x|`.
        abs => Abs,
        /// `e^x`.
        exp => Exp,
        /// Natural logarithm.
        log => Log,
        /// Square root.
        sqrt => Sqrt,
        /// `1 / sqrt(x)`.
        rsqrt => Rsqrt,
        /// `x * x`.
        square => Square,
        /// `1 / (1 + e^-x)`.
        sigmoid => Sigmoid,
        /// Hyperbolic tangent.
        tanh => Tanh,
        /// The error function.
        erf => Erf,
        /// Sine.
        sin => Sin,
        /// Cosine.
        cos => Cos,
        /// `1 / x`.
        reciprocal => Reciprocal,
        /// Boolean not.
        logical_not => LogicalNot,
        /// Round down.
        floor => Floor,
        /// Round up.
        ceil => Ceil,
        /// `ln(1 + x)`.
        log1p => Log1p,
        /// A row-major contiguous copy (a no-op when already contiguous).
        contiguous => Contiguous,
    );

    binary_methods!(
        /// `self + other`.
        add => Add,
        /// `self - other`.
        subtract => Subtract,
        /// `self * other`.
        multiply => Multiply,
        /// `self / other`.
        divide => Divide,
        /// Element-wise maximum.
        maximum => Maximum,
        /// Element-wise minimum.
        minimum => Minimum,
        /// `self ^ other`.
        power => Power,
        /// `self == other`.
        equal => Equal,
        /// `self != other`.
        not_equal => NotEqual,
        /// `self < other`.
        less => Less,
        /// `self <= other`.
        less_equal => LessEqual,
        /// `self > other`.
        greater => Greater,
        /// `self >= other`.
        greater_equal => GreaterEqual,
        /// Boolean and.
        logical_and => LogicalAnd,
        /// Boolean or.
        logical_or => LogicalOr,
        /// Remainder with the sign of the divisor.
        remainder => Remainder,
        /// Division rounded down.
        floor_divide => FloorDivide,
    );

    /// SiLU (swish): `x * sigmoid(x)`.
    pub fn silu(&self) -> Result<Array> {
        self.multiply(&self.sigmoid()?)
    }

    /// GELU, exact: `x * (1 + erf(x / sqrt(2))) / 2`.
    pub fn gelu(&self) -> Result<Array> {
        let scaled = self.multiply(&self.scalar_like(std::f32::consts::FRAC_1_SQRT_2)?)?;
        let one = self.scalar_like(1.0)?;
        let half = self.scalar_like(0.5)?;
        self.multiply(&scaled.erf()?.add(&one)?)?.multiply(&half)
    }

    /// GELU, tanh approximation:
    /// `x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2`.
    pub fn gelu_approx(&self) -> Result<Array> {
        let c = self.scalar_like((2.0 / std::f32::consts::PI).sqrt())?;
        let cube = self.square()?.multiply(self)?;
        let inner = self
            .add(&cube.multiply(&self.scalar_like(0.044715)?)?)?
            .multiply(&c)?;
        let one = self.scalar_like(1.0)?;
        self.multiply(&inner.tanh()?.add(&one)?)?
            .multiply(&self.scalar_like(0.5)?)
    }

    /// Converts the elements to `dtype`.
    pub fn astype(&self, dtype: Dtype) -> Result<Array> {
        call_array!(mlxs_astype(self.as_ptr(), dtype as i32))
    }

    /// Clamps the elements to `[lo, hi]` (each bound optional).
    pub fn clip(&self, lo: Option<&Array>, hi: Option<&Array>) -> Result<Array> {
        let mut out = self.clone();
        if let Some(lo) = lo {
            out = out.maximum(lo)?;
        }
        if let Some(hi) = hi {
            out = out.minimum(hi)?;
        }
        Ok(out)
    }
}

/// Reductions, softmax, sorting and scans.
impl Array {
    reduce_methods!(
        /// Sum.
        sum => Sum,
        /// Arithmetic mean.
        mean => Mean,
        /// Maximum.
        max => Max,
        /// Minimum.
        min => Min,
        /// Product.
        prod => Prod,
        /// `log(sum(exp(x)))`, computed stably.
        logsumexp => LogSumExp,
        /// Whether all elements are true.
        all => All,
        /// Whether any element is true.
        any => Any,
    );

    /// Index of the maximum along `axis`.
    pub fn argmax(&self, axis: i32, keepdims: bool) -> Result<Array> {
        call_array!(mlxs_arg_reduce(0, self.as_ptr(), axis, keepdims))
    }

    /// Index of the minimum along `axis`.
    pub fn argmin(&self, axis: i32, keepdims: bool) -> Result<Array> {
        call_array!(mlxs_arg_reduce(1, self.as_ptr(), axis, keepdims))
    }

    /// Softmax along `axis`; `precise` accumulates half-precision inputs in f32.
    pub fn softmax(&self, axis: i32, precise: bool) -> Result<Array> {
        call_array!(mlxs_softmax(self.as_ptr(), axis, precise))
    }

    /// Sorted copy along `axis` (stable, NaN last).
    pub fn sort(&self, axis: i32) -> Result<Array> {
        call_array!(mlxs_sort(self.as_ptr(), axis, false))
    }

    /// Indices that sort along `axis` (stable, NaN last).
    pub fn argsort(&self, axis: i32) -> Result<Array> {
        call_array!(mlxs_sort(self.as_ptr(), axis, true))
    }

    /// Indices that partition along `axis` so that the element at `kth` is
    /// in its sorted place, smaller ones before and larger ones after it.
    pub fn argpartition(&self, kth: i32, axis: i32) -> Result<Array> {
        call_array!(mlxs_argpartition(self.as_ptr(), kth, axis))
    }

    /// The `k` largest values along `axis` (in no particular order).
    pub fn topk(&self, k: i32, axis: i32) -> Result<Array> {
        call_array!(mlxs_topk(self.as_ptr(), k, axis))
    }

    /// Cumulative sum along `axis`.
    pub fn cumsum(&self, axis: i32, reverse: bool, inclusive: bool) -> Result<Array> {
        call_array!(mlxs_cumsum(self.as_ptr(), axis, reverse, inclusive))
    }

    /// Matrix product with NumPy `matmul` semantics (batched, broadcast).
    pub fn matmul(&self, other: &Array) -> Result<Array> {
        call_array!(mlxs_matmul(self.as_ptr(), other.as_ptr()))
    }

    /// `alpha * (self @ other) + beta * c` in one fused kernel (how a
    /// linear layer with a bias computes).
    pub fn addmm(&self, other: &Array, c: &Array, alpha: f32, beta: f32) -> Result<Array> {
        call_array!(mlxs_addmm(
            c.as_ptr(),
            self.as_ptr(),
            other.as_ptr(),
            alpha,
            beta
        ))
    }
}

/// Shape manipulation and indexing.
impl Array {
    /// The same elements in a new shape (one dimension may be -1).
    pub fn reshape(&self, shape: &[i32]) -> Result<Array> {
        call_array!(mlxs_reshape(self.as_ptr(), shape.as_ptr(), shape.len()))
    }

    /// Permutes the axes.
    pub fn transpose(&self, axes: &[i32]) -> Result<Array> {
        call_array!(mlxs_transpose(self.as_ptr(), axes.as_ptr(), axes.len()))
    }

    /// Swaps the last two axes (the matrix transpose of a batch).
    pub fn t(&self) -> Result<Array> {
        let n = self.ndim() as i32;
        if n < 2 {
            return Err(MlxError::InvalidArgument(format!(
                "t() needs at least 2 dimensions, shape is {:?}",
                self.shape()
            )));
        }
        let mut axes: Vec<i32> = (0..n).collect();
        axes.swap((n - 1) as usize, (n - 2) as usize);
        self.transpose(&axes)
    }

    /// Swaps two axes.
    pub fn swapaxes(&self, a: i32, b: i32) -> Result<Array> {
        let n = self.ndim() as i32;
        let norm = |x: i32| if x < 0 { x + n } else { x };
        let (a, b) = (norm(a), norm(b));
        if !(0..n).contains(&a) || !(0..n).contains(&b) {
            return Err(MlxError::InvalidArgument(format!(
                "swapaxes({a}, {b}) on {n} dimensions"
            )));
        }
        let mut axes: Vec<i32> = (0..n).collect();
        axes.swap(a as usize, b as usize);
        self.transpose(&axes)
    }

    /// Broadcasts to `shape`.
    pub fn broadcast_to(&self, shape: &[i32]) -> Result<Array> {
        call_array!(mlxs_broadcast_to(
            self.as_ptr(),
            shape.as_ptr(),
            shape.len()
        ))
    }

    /// Inserts a dimension of size 1 at `axis`.
    pub fn expand_dims(&self, axis: i32) -> Result<Array> {
        call_array!(mlxs_expand_dims(self.as_ptr(), axis))
    }

    /// Removes the dimension of size 1 at `axis`.
    pub fn squeeze(&self, axis: i32) -> Result<Array> {
        call_array!(mlxs_squeeze(self.as_ptr(), axis))
    }

    /// The elements `start[i]..stop[i]` step `strides[i]` of every axis.
    pub fn slice(&self, start: &[i32], stop: &[i32], strides: &[i32]) -> Result<Array> {
        check_slice_args(self.ndim(), start, stop, strides)?;
        call_array!(mlxs_slice(
            self.as_ptr(),
            start.as_ptr(),
            stop.as_ptr(),
            strides.as_ptr(),
            start.len(),
        ))
    }

    /// `start..stop` of one axis, all of the others.
    pub fn slice_axis(&self, axis: i32, start: i32, stop: i32) -> Result<Array> {
        let (starts, stops, strides) = self.axis_window(axis, start, stop)?;
        self.slice(&starts, &stops, &strides)
    }

    /// A copy of `self` with `update` written over the region
    /// `start..stop` step `strides`.
    pub fn slice_update(
        &self,
        update: &Array,
        start: &[i32],
        stop: &[i32],
        strides: &[i32],
    ) -> Result<Array> {
        check_slice_args(self.ndim(), start, stop, strides)?;
        call_array!(mlxs_slice_update(
            self.as_ptr(),
            update.as_ptr(),
            start.as_ptr(),
            stop.as_ptr(),
            strides.as_ptr(),
            start.len(),
        ))
    }

    /// A copy of `self` with `update` written over `start..stop` of one axis.
    pub fn slice_update_axis(
        &self,
        update: &Array,
        axis: i32,
        start: i32,
        stop: i32,
    ) -> Result<Array> {
        let (starts, stops, strides) = self.axis_window(axis, start, stop)?;
        self.slice_update(update, &starts, &stops, &strides)
    }

    fn axis_window(&self, axis: i32, start: i32, stop: i32) -> Result<SliceArgs> {
        let shape = self.shape();
        let n = shape.len() as i32;
        let axis = if axis < 0 { axis + n } else { axis };
        if !(0..n).contains(&axis) {
            return Err(MlxError::InvalidArgument(format!(
                "axis {axis} out of range for shape {shape:?}"
            )));
        }
        let mut starts = vec![0; shape.len()];
        let mut stops = shape;
        starts[axis as usize] = start;
        stops[axis as usize] = stop;
        Ok((starts, stops, vec![1; n as usize]))
    }

    /// Splits along `axis` at `indices`, giving `indices.len() + 1` parts.
    pub fn split(&self, indices: &[i32], axis: i32) -> Result<Vec<Array>> {
        let mut outs: Vec<*mut ffi::mlxs_array> = vec![std::ptr::null_mut(); indices.len() + 1];
        // SAFETY: `outs` has room for the `indices.len() + 1` handles the
        // shim writes on success; `indices` is live for the call.
        let rc = unsafe {
            ffi::mlxs_split(
                self.as_ptr(),
                indices.as_ptr(),
                indices.len(),
                axis,
                outs.as_mut_ptr(),
            )
        };
        crate::error::check(rc)?;
        outs.into_iter().map(Array::from_owned).collect()
    }

    /// Gathers entries along `axis` at integer `indices` (NumPy `take`).
    pub fn take(&self, indices: &Array, axis: i32) -> Result<Array> {
        call_array!(mlxs_take(self.as_ptr(), indices.as_ptr(), axis))
    }

    /// Gathers along `axis` with `indices` shaped like `self`
    /// (NumPy `take_along_axis`).
    pub fn take_along_axis(&self, indices: &Array, axis: i32) -> Result<Array> {
        call_array!(mlxs_take_along_axis(self.as_ptr(), indices.as_ptr(), axis))
    }

    /// A copy of `self` with `values` written at `indices` along `axis`
    /// (NumPy `put_along_axis`).
    pub fn put_along_axis(&self, indices: &Array, values: &Array, axis: i32) -> Result<Array> {
        call_array!(mlxs_put_along_axis(
            self.as_ptr(),
            indices.as_ptr(),
            values.as_ptr(),
            axis,
        ))
    }

    /// The lower triangle of the last two axes (diagonal `k` and below), zeros above.
    pub fn tril(&self, k: i32) -> Result<Array> {
        call_array!(mlxs_tri_mask(self.as_ptr(), k, false))
    }

    /// The upper triangle of the last two axes (diagonal `k` and above), zeros below.
    pub fn triu(&self, k: i32) -> Result<Array> {
        call_array!(mlxs_tri_mask(self.as_ptr(), k, true))
    }
}

type SliceArgs = (Vec<i32>, Vec<i32>, Vec<i32>);

fn check_slice_args(ndim: usize, start: &[i32], stop: &[i32], strides: &[i32]) -> Result<()> {
    if start.len() != ndim || stop.len() != ndim || strides.len() != ndim {
        return Err(MlxError::InvalidArgument(format!(
            "slice of a {ndim}-dimensional array needs {ndim} starts, stops and strides, got {}, {}, {}",
            start.len(),
            stop.len(),
            strides.len()
        )));
    }
    Ok(())
}

fn handles(arrays: &[&Array]) -> Vec<ffi::Handle> {
    arrays.iter().map(|a| a.as_ptr()).collect()
}

/// Joins arrays along an existing axis.
pub fn concatenate(arrays: &[&Array], axis: i32) -> Result<Array> {
    let hs = handles(arrays);
    call_array!(mlxs_concatenate(hs.as_ptr(), hs.len(), axis))
}

/// Joins arrays along a new axis.
pub fn stack(arrays: &[&Array], axis: i32) -> Result<Array> {
    let hs = handles(arrays);
    call_array!(mlxs_stack(hs.as_ptr(), hs.len(), axis))
}

/// `x` where `cond` holds, else `y` (broadcast).
pub fn where_(cond: &Array, x: &Array, y: &Array) -> Result<Array> {
    call_array!(mlxs_where(cond.as_ptr(), x.as_ptr(), y.as_ptr()))
}

/// An array of `shape` filled with `value` converted to `dtype`.
pub fn full(shape: &[i32], value: f64, dtype: Dtype) -> Result<Array> {
    // GPUs have no f64: the fill value travels as f32 or i64.
    let v = if dtype.is_float() {
        Array::scalar(value as f32)?
    } else {
        Array::scalar(value as i64)?
    };
    call_array!(mlxs_full(
        shape.as_ptr(),
        shape.len(),
        v.as_ptr(),
        dtype as i32
    ))
}

/// An array of zeros.
pub fn zeros(shape: &[i32], dtype: Dtype) -> Result<Array> {
    full(shape, 0.0, dtype)
}

/// An array of ones.
pub fn ones(shape: &[i32], dtype: Dtype) -> Result<Array> {
    full(shape, 1.0, dtype)
}

/// `start, start + step, ...` up to (not including) `stop`.
pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
    call_array!(mlxs_arange(start, stop, step, dtype as i32))
}

// ---- Gathered products (Mixture-of-Experts) ----

/// Which matrices of a stack each output batch element of a gathered
/// product multiplies: `out[i] = a[lhs[i]] @ b[rhs[i]]`, where the index
/// arrays broadcast against each other and against the operands' batch
/// dimensions. An absent index array is the identity over that operand's
/// batch (the operand broadcasts as in `matmul`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gather<'a> {
    /// Indices into the batch of the left operand (flattened).
    pub lhs: Option<&'a Array>,
    /// Indices into the batch of the right operand (flattened): the expert
    /// of each row in a Mixture-of-Experts layer.
    pub rhs: Option<&'a Array>,
    /// The `rhs` indices are in ascending order, so MLX may multiply the
    /// rows that share a matrix together (mlx-lm sorts a prefill's rows by
    /// expert for this).
    pub sorted: bool,
}

impl Gather<'_> {
    pub(crate) fn handles(&self) -> (ffi::Handle, ffi::Handle) {
        let h = |a: Option<&Array>| a.map_or(std::ptr::null(), Array::as_ptr);
        (h(self.lhs), h(self.rhs))
    }
}

/// The gathered matrix product `a[lhs] @ b[rhs]` (MLX's `gather_mm`):
/// `a` is `[..., M, K]`, `b` is `[..., K, N]`; the result has the shape of
/// the broadcast indices followed by `[M, N]`.
pub fn gather_mm(a: &Array, b: &Array, gather: Gather<'_>) -> Result<Array> {
    let (lhs, rhs) = gather.handles();
    call_array!(mlxs_gather_mm(
        a.as_ptr(),
        b.as_ptr(),
        lhs,
        rhs,
        gather.sorted
    ))
}
