// PlanReplay: a recorded op plan (hrnet_fast/nn/op_plan.py) run in C++, with no Python between its ops.
//
// A plan is a list of calls on an environment of values ("slots"; slot 0 is the input). Each call is
// one operator with its arguments: constants fixed at recording (weights, prepared primitives,
// sizes, flags) and earlier results read from slots, either a whole argument or an element of a list
// argument. Its results go to slots, and the slots no later call reads are dropped after it, so an
// intermediate lives only as long as in the recorded forward. Each call goes through the dispatcher
// as a boxed call (as a TorchScript interpreter would), which on a 2-core CPU costs about 1 us
// against about 8-10 us for a call from Python with a custom-class argument.
//
// Lanes (set_lanes; the schedule comes from hrnet_fast/nn/plan_lanes.py): a call on lane 0 or 1
// runs single-threaded beside the calls of the other lane, instead of splitting itself over every
// thread (lane -1). A run of consecutive laned calls is one OpenMP region of two threads, each
// running its lane's calls in plan order; a call first waits for the calls of the other lane it
// names (the earlier calls whose results it reads, whose inputs it overwrites, or that read a slot it
// frees). Ops called inside the region see omp_in_parallel() and run on their one thread. Lanes run
// in inference mode only: outside it an op's autograd kernel may be Python, which the other thread
// would wait on the GIL for; there, and where torch is set to one thread, the calls run in plan order.
#include <ATen/Parallel.h>
#include <ATen/ScalarOps.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <omp.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hrnet_fast {
namespace {

// A Python value (inferred as Any: lists arrive as tuples) as the schema's argument type expects it:
// sequences as typed lists, a number where a tensor goes as the wrapped-number tensor Python's
// argument parser makes of it (type promotion treats it as a scalar). Raises where it does not fit.
c10::IValue as_argument(const c10::IValue& value, const c10::TypePtr& type, const std::string& where) {
  if (const auto optional = type->cast<c10::OptionalType>()) {
    return value.isNone() ? value : as_argument(value, optional->getElementType(), where);
  }
  if (const auto list = type->cast<c10::ListType>()) {
    TORCH_CHECK(value.isTuple() || value.isList(), "PlanReplay: ", where, " must be a sequence for ", type->str());
    c10::impl::GenericList typed(list->getElementType());
    const auto items = value.isTuple() ? value.toTupleRef().elements().vec() : value.toList().vec();
    for (const c10::IValue& item : items) typed.push_back(as_argument(item, list->getElementType(), where));
    return typed;
  }
  if (type->kind() == c10::TypeKind::TensorType && (value.isDouble() || value.isInt() || value.isBool())) {
    at::Tensor number = c10::scalar_to_tensor(value.toScalar());
    number.unsafeGetTensorImpl()->set_wrapped_number(true);
    return number;
  }
  TORCH_CHECK(value.type()->isSubtypeOf(*type), "PlanReplay: ", where, " is a ", value.type()->str(), ", not a ",
              type->str());
  return value;
}

struct OtherLaneFailed {};  // thrown to stop a lane waiting for a call of a lane that failed

class PlanReplay : public torch::CustomClassHolder {
 public:
  // `slots` values in the environment; `outputs` the slots the run returns, in order.
  PlanReplay(int64_t slots, std::vector<int64_t> outputs) : slots_(slots), outputs_(std::move(outputs)) {
    TORCH_CHECK(slots_ >= 1, "PlanReplay: at least one slot (the input)");
    for (const int64_t s : outputs_) check_slot(s, "output");
  }

  // One call of the operator `name`.`overload`. `args`: one value per schema argument (defaults
  // included; a sequence for a list argument; anything where a ref fills it). `refs`: [argument,
  // element or -1 for the whole argument, slot] triples. `results`: the slot of each returned tensor
  // (-1: not kept). `frees`: the slots to drop after the call.
  void add_call(const std::string& name, const std::string& overload, std::vector<c10::IValue> args,
                const std::vector<std::vector<int64_t>>& refs, std::vector<int64_t> results,
                std::vector<int64_t> frees) {
    const auto handle = c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), overload.c_str());
    const c10::FunctionSchema& schema = handle.schema();
    const std::string op = name + "." + overload;
    TORCH_CHECK(args.size() == schema.arguments().size(), "PlanReplay: ", op, " takes ",
                schema.arguments().size(), " arguments, got ", args.size());
    TORCH_CHECK(results.size() == schema.returns().size(), "PlanReplay: ", op, " returns ",
                schema.returns().size(), " values, got ", results.size(), " result slots");
    for (const c10::Argument& ret : schema.returns()) {
      TORCH_CHECK(ret.type()->kind() == c10::TypeKind::TensorType, "PlanReplay: ", op,
                  " returns a ", ret.type()->str(), "; only tensors are replayed");
    }
    Call call{handle, {}, {}, {}, std::move(results), std::move(frees)};
    for (const int64_t s : call.results) {
      if (s != -1) check_slot(s, "result");
    }
    for (const int64_t s : call.frees) check_slot(s, "free");
    std::vector<bool> filled(args.size(), false);
    for (const std::vector<int64_t>& ref : refs) {
      TORCH_CHECK(ref.size() == 3 && ref[0] >= 0 && ref[0] < static_cast<int64_t>(args.size()), "PlanReplay: ", op,
                  ": a ref is [argument, element, slot] with a valid argument");
      check_slot(ref[2], "ref");
      filled[ref[0]] = true;
    }
    for (size_t i = 0; i < args.size(); ++i) {
      const c10::Argument& argument = schema.arguments()[i];
      const std::string where = op + " argument " + argument.name();
      c10::TypePtr type = argument.type();
      if (const auto optional = type->cast<c10::OptionalType>()) type = optional->getElementType();
      const auto list = type->cast<c10::ListType>();
      if (!filled[i] || !list) {  // a constant, or a whole argument read from a slot
        for (const std::vector<int64_t>& ref : refs) {
          TORCH_CHECK(ref[0] != static_cast<int64_t>(i) || ref[1] == -1, "PlanReplay: ", where,
                      " is not a list: a ref reads it whole (element -1)");
        }
        call.args.push_back(filled[i] ? c10::IValue() : as_argument(args[i], argument.type(), where));
        continue;
      }
      call.args.emplace_back();  // a list with elements read from slots, made at every run
      call.lists.push_back(list_template(static_cast<int64_t>(i), list->getElementType(), args[i], refs, where));
    }
    for (const std::vector<int64_t>& ref : refs) {
      if (ref[1] < 0) call.whole.emplace_back(ref[0], ref[2]);
    }
    calls_.push_back(std::move(call));
  }

  // The plan run on x: the output slots' tensors.
  std::vector<at::Tensor> run(const at::Tensor& x) const {
    std::vector<c10::IValue> env = start(x);
    torch::jit::Stack stack;
    for (size_t k = 0; k < calls_.size();) {
      if (lanes_.empty() || lanes_[k] < 0) {
        execute(calls_[k++], env, stack);
        continue;
      }
      size_t end = k;
      while (end < calls_.size() && lanes_[end] >= 0) ++end;
      run_lanes(k, end, env);
      k = end;
    }
    return finish(env);
  }

  // Seconds each call takes in one run on x, every op on all threads, or (single_thread) on one.
  std::vector<double> time_calls(const at::Tensor& x, bool single_thread) const {
    std::vector<c10::IValue> env = start(x);
    std::vector<double> seconds(calls_.size());
    auto timed = [&] {
      torch::jit::Stack stack;
      for (size_t k = 0; k < calls_.size(); ++k) {
        const auto begin = std::chrono::steady_clock::now();
        execute(calls_[k], env, stack);
        seconds[k] = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
      }
    };
    if (!single_thread) {
      timed();
      return seconds;
    }
    std::exception_ptr error;
#pragma omp parallel num_threads(2)
    {
#pragma omp master
      try {
        timed();
      } catch (...) {
        error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    return seconds;
  }

  // Call k's lane (-1: all threads; 0, 1: single-threaded beside the other lane) and the calls of
  // the other lane it waits for (earlier calls, in the same run of laned calls).
  void set_lanes(std::vector<int64_t> lanes, const std::vector<std::vector<int64_t>>& waits) {
    TORCH_CHECK(lanes.size() == calls_.size() && waits.size() == calls_.size(), "PlanReplay: set_lanes takes a lane ",
                "and a wait list per call (", calls_.size(), "), got ", lanes.size(), " and ", waits.size());
    std::vector<std::vector<int32_t>> checked(calls_.size());
    for (size_t k = 0; k < calls_.size(); ++k) {
      TORCH_CHECK(lanes[k] >= -1 && lanes[k] <= 1, "PlanReplay: call ", k, "'s lane must be -1, 0 or 1, got ",
                  lanes[k]);
      for (const int64_t d : waits[k]) {
        TORCH_CHECK(lanes[k] >= 0 && d >= 0 && d < static_cast<int64_t>(k), "PlanReplay: call ", k,
                    " cannot wait for call ", d, " (only a laned call waits, for an earlier one)");
        for (int64_t j = d; j <= static_cast<int64_t>(k); ++j) {
          TORCH_CHECK(lanes[j] >= 0, "PlanReplay: call ", k, " waits for call ", d,
                      " across call ", j, ", which runs on all threads");
        }
        TORCH_CHECK(lanes[d] != lanes[k], "PlanReplay: call ", k, " waits for call ", d, " on its own lane");
        checked[k].push_back(static_cast<int32_t>(d));
      }
    }
    lanes_ = std::move(lanes);
    waits_ = std::move(checked);
  }

  int64_t num_calls() const { return static_cast<int64_t>(calls_.size()); }

  // Each call's lane (-1 for all where set_lanes was not called).
  std::vector<int64_t> lanes() const {
    return lanes_.empty() ? std::vector<int64_t>(calls_.size(), -1) : lanes_;
  }

 private:
  struct ListTemplate {
    int64_t arg;
    c10::TypePtr element;
    std::vector<c10::IValue> items;
    std::vector<std::pair<int64_t, int64_t>> fills;  // (element, slot)
  };
  struct Call {
    c10::OperatorHandle op;
    std::vector<c10::IValue> args;
    std::vector<std::pair<int64_t, int64_t>> whole;  // (argument, slot)
    std::vector<ListTemplate> lists;
    std::vector<int64_t> results, frees;
  };

  std::vector<c10::IValue> start(const at::Tensor& x) const {
    std::vector<c10::IValue> env(slots_);
    env[0] = x;
    return env;
  }

  std::vector<at::Tensor> finish(const std::vector<c10::IValue>& env) const {
    std::vector<at::Tensor> out;
    out.reserve(outputs_.size());
    for (const int64_t slot : outputs_) out.push_back(env[slot].toTensor());
    return out;
  }

  static void execute(const Call& call, std::vector<c10::IValue>& env, torch::jit::Stack& stack) {
    stack.assign(call.args.begin(), call.args.end());
    for (const auto& [arg, slot] : call.whole) stack[arg] = env[slot];
    for (const ListTemplate& templ : call.lists) {
      c10::impl::GenericList list(templ.element);
      list.reserve(templ.items.size());
      for (const c10::IValue& item : templ.items) list.push_back(item);
      for (const auto& [element, slot] : templ.fills) list.set(element, env[slot]);
      stack[templ.arg] = std::move(list);
    }
    call.op.callBoxed(stack);
    for (size_t r = 0; r < call.results.size(); ++r) {
      if (call.results[r] != -1) env[call.results[r]] = std::move(stack[r]);
    }
    for (const int64_t slot : call.frees) env[slot] = c10::IValue();
  }

  // Calls [begin, end), all laned, on two threads (see the top of the file); on one thread in plan
  // order outside inference mode, where torch is set to one thread, or where OpenMP gives fewer (a
  // run inside another parallel region).
  void run_lanes(size_t begin, size_t end, std::vector<c10::IValue>& env) const {
    const std::unique_ptr<std::atomic<bool>[]> done(new std::atomic<bool>[end - begin]);
    for (size_t k = begin; k < end; ++k) done[k - begin].store(false, std::memory_order_relaxed);
    std::atomic<bool> failed{false};
    std::exception_ptr errors[2];
    const at::ThreadLocalState state;  // grad and inference mode, dispatch keys, profiler: as the caller's
    const int threads = c10::InferenceMode::is_enabled() ? std::min(2, at::get_num_threads()) : 1;
#pragma omp parallel num_threads(threads)
    {
      const int lane = omp_get_thread_num(), team = omp_get_num_threads();
      try {
        const at::ThreadLocalStateGuard guard(state);
        torch::jit::Stack stack;
        for (size_t k = begin; k < end && !failed.load(std::memory_order_relaxed); ++k) {
          if (team == 2 && lanes_[k] != lane) continue;
          for (const int32_t d : waits_[k]) {
            while (team == 2 && !done[d - begin].load(std::memory_order_acquire)) {
              if (failed.load(std::memory_order_relaxed)) throw OtherLaneFailed{};
            }
          }
          execute(calls_[k], env, stack);
          done[k - begin].store(true, std::memory_order_release);
        }
      } catch (const OtherLaneFailed&) {  // stopped waiting: the other lane's error is the one to raise
      } catch (...) {
        errors[lane] = std::current_exception();
        failed.store(true);
      }
    }
    for (const std::exception_ptr& error : errors) {
      if (error) std::rethrow_exception(error);
    }
  }

  // List argument `arg` of a call: its constant elements converted now, the others filled from the
  // slots its refs name.
  ListTemplate list_template(int64_t arg, const c10::TypePtr& element, const c10::IValue& value,
                             const std::vector<std::vector<int64_t>>& refs, const std::string& where) const {
    TORCH_CHECK(value.isTuple(), "PlanReplay: ", where, " must be a sequence");
    ListTemplate templ{arg, element, value.toTupleRef().elements().vec(), {}};
    std::vector<bool> filled(templ.items.size(), false);
    for (const std::vector<int64_t>& ref : refs) {
      if (ref[0] != arg) continue;
      TORCH_CHECK(ref[1] >= 0 && ref[1] < static_cast<int64_t>(templ.items.size()), "PlanReplay: ", where,
                  " has no element ", ref[1]);
      templ.fills.emplace_back(ref[1], ref[2]);
      filled[ref[1]] = true;
    }
    for (size_t e = 0; e < templ.items.size(); ++e) {
      templ.items[e] = filled[e] ? c10::IValue() : as_argument(templ.items[e], element, where);
    }
    return templ;
  }

  void check_slot(int64_t slot, const char* what) const {
    TORCH_CHECK(slot >= 0 && slot < slots_, "PlanReplay: ", what, " slot ", slot, " is outside 0..", slots_ - 1);
  }

  int64_t slots_;
  std::vector<int64_t> outputs_;
  std::vector<Call> calls_;
  std::vector<int64_t> lanes_;               // empty: every call on all threads
  std::vector<std::vector<int32_t>> waits_;  // per call: the calls of the other lane it waits for
};

}  // namespace
}  // namespace hrnet_fast

TORCH_LIBRARY_FRAGMENT(hrnet_fast, m) {
  m.class_<hrnet_fast::PlanReplay>("PlanReplay")
      .def(torch::init<int64_t, std::vector<int64_t>>())
      .def("add_call", &hrnet_fast::PlanReplay::add_call)
      .def("run", &hrnet_fast::PlanReplay::run)
      .def("time_calls", &hrnet_fast::PlanReplay::time_calls)
      .def("set_lanes", &hrnet_fast::PlanReplay::set_lanes)
      .def("num_calls", &hrnet_fast::PlanReplay::num_calls)
      .def("lanes", &hrnet_fast::PlanReplay::lanes);
}
