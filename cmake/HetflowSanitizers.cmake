# HETFLOW_SANITIZE="address;undefined" or "thread": applies to everything built after this point.
if(HETFLOW_SANITIZE)
  list(JOIN HETFLOW_SANITIZE "," _hetflow_sanitizers)
  add_compile_options(-fsanitize=${_hetflow_sanitizers} -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=${_hetflow_sanitizers})
  if("thread" IN_LIST HETFLOW_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC warns that ThreadSanitizer does not model atomic_thread_fence. Our fences only order
    # atomics against atomics (the Dekker-style checks of the sleep protocol and the deque's last
    # item); data handed between threads is published with release/acquire operations TSan sees.
    add_compile_options(-Wno-tsan)
  endif()
  if("undefined" IN_LIST HETFLOW_SANITIZE)
    add_compile_options(-fno-sanitize-recover=undefined)
  endif()
endif()
