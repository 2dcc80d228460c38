// 2-D convolutions (NHWC activations, HWIO kernels, float32 or bfloat16, every
// operand of a call in one dtype) and their two gradients as XLA FFI handlers
// that call oneDNN, for squeezejax/onednn.py.
// Each JAX CPU device calls them from its own thread; `threads` is the OpenMP
// team each such thread gets (cores per device), set once per thread.
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Geometry {
  memory::data_type dtype;
  memory::dims x, w, y, strides, pad_l, pad_r;
  std::string Key(char kind) const {
    std::string key{kind, static_cast<char>('0' + static_cast<int>(dtype))};
    for (const auto* d : {&x, &w, &y, &strides, &pad_l, &pad_r})
      for (auto v : *d) key += std::to_string(v) + ",";
    return key;
  }
};

// oneDNN's logical order is NCHW / OIHW whatever the memory layout.
Geometry MakeGeometry(memory::data_type dtype, ffi::Span<const int64_t> x,
                      ffi::Span<const int64_t> w, ffi::Span<const int64_t> y, int64_t sh,
                      int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return {dtype, {x[0], x[3], x[1], x[2]}, {w[3], w[2], w[0], w[1]},
          {y[0], y[3], y[1], y[2]}, {sh, sw}, {pt, pl}, {pb, pr}};
}

// The operands' one dtype; false where they differ or are neither float32 nor bfloat16.
bool OneDataType(std::initializer_list<ffi::DataType> types, memory::data_type* dtype) {
  ffi::DataType first = *types.begin();
  for (ffi::DataType t : types)
    if (t != first) return false;
  if (first != ffi::DataType::F32 && first != ffi::DataType::BF16) return false;
  *dtype = first == ffi::DataType::F32 ? memory::data_type::f32 : memory::data_type::bf16;
  return true;
}

#define ONE_DATA_TYPE(dtype, ...)                                                  \
  memory::data_type dtype;                                                         \
  if (!OneDataType({__VA_ARGS__}, &dtype))                                         \
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,                            \
                      "oneDNN convolution: expected float32 or bfloat16 operands, " \
                      "all of one dtype");

memory::desc Md(const Geometry& g, const memory::dims& d, tag t) {
  return memory::desc(d, g.dtype, t);
}

// The bias, where the layer has one, is added in the forward convolution: no
// separate pass over its output.
memory::desc BiasMd(const Geometry& g, bool bias) {
  return bias ? Md(g, {g.w[0]}, tag::a) : memory::desc();
}

dnnl::convolution_forward::primitive_desc ForwardPd(const Geometry& g, bool bias) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      Md(g, g.x, tag::nhwc), Md(g, g.w, tag::any), BiasMd(g, bias), Md(g, g.y, tag::nhwc),
      g.strides, g.pad_l, g.pad_r);
}

// A primitive with its kernel's layout: kernels are reordered to and from HWIO
// through a per-thread buffer when oneDNN prefers a blocked layout.
struct Entry {
  dnnl::primitive prim;
  memory::desc kernel;
  bool reorder;
  dnnl::reorder to_kernel, from_kernel;
};

struct ThreadState {
  dnnl::stream stream{Engine()};
  std::unordered_map<std::string, Entry> cache;
  std::vector<char> buffer;
};

ThreadState& State(int64_t threads) {
  thread_local std::unique_ptr<ThreadState> state;
  if (!state) {
    omp_set_num_threads(static_cast<int>(threads));
    state = std::make_unique<ThreadState>();
  }
  return *state;
}

// kind: 'f' forward ('F' with a bias), 'd' data gradient, 'w' kernel gradient.
template <typename MakePd>
Entry& Lookup(ThreadState& s, char kind, const Geometry& g, MakePd make_pd) {
  std::string key = g.Key(kind);
  auto it = s.cache.find(key);
  if (it != s.cache.end()) return it->second;
  auto pd = make_pd();
  Entry e;
  e.prim = dnnl::primitive(pd);
  e.kernel = kind == 'w' ? pd.diff_weights_desc() : pd.weights_desc();
  memory::desc plain = Md(g, g.w, tag::hwio);
  e.reorder = e.kernel != plain;
  if (e.reorder) {
    e.to_kernel = dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), plain, Engine(), e.kernel));
    e.from_kernel =
        dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), e.kernel, Engine(), plain));
  }
  return s.cache.emplace(key, std::move(e)).first->second;
}

// The kernel as the primitive wants it: `data` itself, or the thread's buffer.
memory KernelMemory(ThreadState& s, const Entry& e, const Geometry& g, void* data,
                    bool copy_in) {
  memory plain(Md(g, g.w, tag::hwio), Engine(), data);
  if (!e.reorder) return plain;
  size_t bytes = e.kernel.get_size();
  if (s.buffer.size() < bytes) s.buffer.resize(bytes);
  memory blocked(e.kernel, Engine(), s.buffer.data());
  if (copy_in) e.to_kernel.execute(s.stream, plain, blocked);
  return blocked;
}

// A oneDNN error becomes the custom call's error (a Python exception), not an abort.
#define CATCH_DNNL(...)                                                                 \
  try {                                                                                 \
    __VA_ARGS__;                                                                        \
  } catch (const dnnl::error& err) {                                                    \
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + err.what()); \
  }                                                                                     \
  return ffi::Error::Success();

// `b`: the bias, or nullptr.
ffi::Error ForwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer* b,
                       ffi::Result<ffi::AnyBuffer> y, int64_t sh, int64_t sw, int64_t pt,
                       int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  ONE_DATA_TYPE(dtype, x.element_type(), w.element_type(),
                (b ? b : &x)->element_type(), y->element_type());
  CATCH_DNNL({
    Geometry g = MakeGeometry(dtype, x.dimensions(), w.dimensions(), y->dimensions(), sh, sw,
                              pt, pb, pl, pr);
    ThreadState& s = State(threads);
    Entry& e = Lookup(s, b ? 'F' : 'f', g, [&] { return ForwardPd(g, b != nullptr); });
    memory xm(Md(g, g.x, tag::nhwc), Engine(), x.untyped_data());
    memory ym(Md(g, g.y, tag::nhwc), Engine(), y->untyped_data());
    memory wm = KernelMemory(s, e, g, w.untyped_data(), true);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}};
    if (b) args.emplace(DNNL_ARG_BIAS, memory(BiasMd(g, true), Engine(), b->untyped_data()));
    e.prim.execute(s.stream, args);
    s.stream.wait();
  })
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                   int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                   int64_t threads) {
  return ForwardImpl(x, w, nullptr, y, sh, sw, pt, pb, pl, pr, threads);
}

ffi::Error ForwardBias(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b,
                       ffi::Result<ffi::AnyBuffer> y, int64_t sh, int64_t sw, int64_t pt,
                       int64_t pb, int64_t pl, int64_t pr, int64_t threads) {
  return ForwardImpl(x, w, &b, y, sh, sw, pt, pb, pl, pr, threads);
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                        int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                        int64_t threads) {
  ONE_DATA_TYPE(dtype, dy.element_type(), w.element_type(), dx->element_type());
  CATCH_DNNL({
    Geometry g = MakeGeometry(dtype, dx->dimensions(), w.dimensions(), dy.dimensions(), sh,
                              sw, pt, pb, pl, pr);
    ThreadState& s = State(threads);
    Entry& e = Lookup(s, 'd', g, [&] {
      return dnnl::convolution_backward_data::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, Md(g, g.x, tag::nhwc),
          Md(g, g.w, tag::any), Md(g, g.y, tag::nhwc), g.strides, g.pad_l, g.pad_r,
          ForwardPd(g, false));
    });
    memory dym(Md(g, g.y, tag::nhwc), Engine(), dy.untyped_data());
    memory dxm(Md(g, g.x, tag::nhwc), Engine(), dx->untyped_data());
    memory wm = KernelMemory(s, e, g, w.untyped_data(), true);
    e.prim.execute(s.stream,
                   {{DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DIFF_SRC, dxm}});
    s.stream.wait();
  })
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                           int64_t pr, int64_t threads) {
  ONE_DATA_TYPE(dtype, x.element_type(), dy.element_type(), dw->element_type());
  CATCH_DNNL({
    Geometry g = MakeGeometry(dtype, x.dimensions(), dw->dimensions(), dy.dimensions(), sh,
                              sw, pt, pb, pl, pr);
    ThreadState& s = State(threads);
    Entry& e = Lookup(s, 'w', g, [&] {
      return dnnl::convolution_backward_weights::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, Md(g, g.x, tag::nhwc),
          Md(g, g.w, tag::any), Md(g, g.y, tag::nhwc), g.strides, g.pad_l, g.pad_r,
          ForwardPd(g, false));
    });
    memory xm(Md(g, g.x, tag::nhwc), Engine(), x.untyped_data());
    memory dym(Md(g, g.y, tag::nhwc), Engine(), dy.untyped_data());
    memory dwm = KernelMemory(s, e, g, dw->untyped_data(), false);
    e.prim.execute(s.stream,
                   {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_DIFF_WEIGHTS, dwm}});
    if (e.reorder) {
      memory plain(Md(g, g.w, tag::hwio), Engine(), dw->untyped_data());
      e.from_kernel.execute(s.stream, dwm, plain);
    }
    s.stream.wait();
  })
}

// Float32 or bfloat16 operands and result, the geometry and the thread count as attributes.
#define OPERAND .Arg<ffi::AnyBuffer>()
#define BIND_CONV(OPERANDS)                                                            \
  ffi::Ffi::Bind() OPERANDS                                                            \
      .Ret<ffi::AnyBuffer>()                                                           \
      .Attr<int64_t>("sh").Attr<int64_t>("sw").Attr<int64_t>("pt").Attr<int64_t>("pb") \
      .Attr<int64_t>("pl").Attr<int64_t>("pr").Attr<int64_t>("threads")

// The flat parameter vector's pieces, each copied into a result of its own: one
// custom call where XLA would compile a kernel per piece.
ffi::Error Split(ffi::AnyBuffer vector, ffi::RemainingRets pieces) {
  const char* from = static_cast<const char*>(vector.untyped_data());
  size_t left = vector.size_bytes();
  for (size_t i = 0; i < pieces.size(); ++i) {
    auto piece = pieces.get<ffi::AnyBuffer>(i);
    if (!piece.has_value()) return piece.error();
    size_t bytes = (*piece)->size_bytes();
    if (bytes > left)
      return ffi::Error(ffi::ErrorCode::kInvalidArgument, "split: pieces exceed the vector");
    std::memcpy((*piece)->untyped_data(), from, bytes);
    from += bytes;
    left -= bytes;
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(squeezejax_split, Split,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().RemainingRets());
XLA_FFI_DEFINE_HANDLER_SYMBOL(squeezejax_conv_forward, Forward, BIND_CONV(OPERAND OPERAND));
XLA_FFI_DEFINE_HANDLER_SYMBOL(squeezejax_conv_forward_bias, ForwardBias,
                              BIND_CONV(OPERAND OPERAND OPERAND));
XLA_FFI_DEFINE_HANDLER_SYMBOL(squeezejax_conv_backward_data, BackwardData,
                              BIND_CONV(OPERAND OPERAND));
XLA_FFI_DEFINE_HANDLER_SYMBOL(squeezejax_conv_backward_weights, BackwardWeights,
                              BIND_CONV(OPERAND OPERAND));
