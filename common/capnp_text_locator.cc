#include "common/capnp_text_locator.h"

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

namespace hv {
namespace capnp_text_locator_internal {
namespace {

// ---------------------------------------------------------------------------
// Tokenizer.
//
// It accepts a superset of capnp's lexical grammar: capnp's lexer groups runs of
// operator characters (`=-` is one token, and a parse error), here each is its own
// punctuation token, which is all a scanner of already-valid text needs.

enum class TokenKind {
  kIdentifier,  // [A-Za-z_][A-Za-z0-9_]*: names, keywords, true/false/void/inf
  kNumber,      // 12, -> `-` then 12; 0x1f, 017, 1.5e-3
  kString,      // "..." with backslash escapes
  kData,        // 0x"..."
  kPunct,       // one ASCII punctuation character: ( ) [ ] { } , ; = : . - $ @ ...
  kJunk,        // a run of bytes capnp doesn't allow outside strings and comments
};

struct Token {
  TokenKind kind;
  size_t begin;  // byte offsets into the text
  size_t end;
};

bool IsSpace(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsDigit(unsigned char c) { return c >= '0' && c <= '9'; }
bool IsIdentStart(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool IsIdentChar(unsigned char c) { return IsIdentStart(c) || IsDigit(c); }
bool IsPunct(unsigned char c) {
  return c > ' ' && c < 0x7f && !IsIdentChar(c) && c != '"' && c != '#';
}

// Returns the offset just past the closing quote of the string whose opening quote is
// at `quote`, or npos if it is unterminated.
size_t SkipQuoted(std::string_view text, size_t quote) {
  for (size_t i = quote + 1; i < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;  // whatever follows is escaped (\" \\ \n \x41 ...); a trailing \ runs off
    } else if (text[i] == '"') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// Tokenizes all of `text`, dropping whitespace and comments. Stops early only at an
// unterminated string (nothing after it can be tokenized reliably).
std::vector<Token> Tokenize(std::string_view text) {
  std::vector<Token> tokens;
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const unsigned char c = text[i];
    if (IsSpace(c)) {
      ++i;
    } else if (c == '#') {
      while (i < n && text[i] != '\n') ++i;
    } else if (IsIdentStart(c)) {
      size_t j = i + 1;
      while (j < n && IsIdentChar(text[j])) ++j;
      tokens.push_back({TokenKind::kIdentifier, i, j});
      i = j;
    } else if (IsDigit(c)) {
      if (c == '0' && i + 2 < n && (text[i + 1] == 'x' || text[i + 1] == 'X') &&
          text[i + 2] == '"') {
        const size_t end = SkipQuoted(text, i + 2);
        if (end == std::string_view::npos) break;
        tokens.push_back({TokenKind::kData, i, end});
        i = end;
        continue;
      }
      const bool hex = c == '0' && i + 1 < n && (text[i + 1] == 'x' || text[i + 1] == 'X');
      size_t j = i + 1;
      while (j < n) {
        const unsigned char d = text[j];
        if (IsIdentChar(d) || d == '.') {
          ++j;
        } else if ((d == '-' || d == '+') && !hex && (text[j - 1] == 'e' || text[j - 1] == 'E')) {
          ++j;  // an exponent's sign: 1.5e-3
        } else {
          break;
        }
      }
      tokens.push_back({TokenKind::kNumber, i, j});
      i = j;
    } else if (c == '"') {
      const size_t end = SkipQuoted(text, i);
      if (end == std::string_view::npos) break;
      tokens.push_back({TokenKind::kString, i, end});
      i = end;
    } else if (IsPunct(c)) {
      tokens.push_back({TokenKind::kPunct, i, i + 1});
      ++i;
    } else {
      size_t j = i + 1;
      while (j < n) {
        const unsigned char d = text[j];
        if (IsSpace(d) || d == '#' || d == '"' || IsIdentChar(d) || IsPunct(d)) break;
        ++j;
      }
      tokens.push_back({TokenKind::kJunk, i, j});
      i = j;
    }
  }
  return tokens;
}

// Maps byte offsets to 1-based line and column.
class LineTable {
 public:
  explicit LineTable(std::string_view text) {
    starts_.push_back(0);
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\n') starts_.push_back(i + 1);
    }
  }
  TextLocation At(size_t offset) const {
    auto it = std::upper_bound(starts_.begin(), starts_.end(), offset);
    const size_t line = static_cast<size_t>(it - starts_.begin());  // >= 1: starts_[0] == 0
    TextLocation loc;
    loc.line = static_cast<int>(line);
    loc.column = static_cast<int>(offset - starts_[line - 1] + 1);
    return loc;
  }

 private:
  std::vector<size_t> starts_;
};

}  // namespace

// ---------------------------------------------------------------------------
// The index: a tree mirroring the literal as written.

struct Field;

struct Node {
  TextLocation at;              // where the value starts
  std::vector<Field> fields;    // `name = value` entries of a struct literal, in order
  std::vector<Node> elements;   // elements of a list literal
};

struct Field {
  std::string name;
  TextLocation at;  // where the name is
  Node value;
};

namespace {

// Deeper nesting than this is not a VM description; refusing it bounds the stack.
constexpr int kMaxDepth = 200;

// Recursive descent over the tokens of one value. Each Parse* returns false where it
// meets something it doesn't expect; whatever was added to the tree before stays.
class ValueParser {
 public:
  ValueParser(std::string_view text, const std::vector<Token>& tokens, size_t pos,
              const LineTable& lines)
      : text_(text), tokens_(tokens), pos_(pos), lines_(lines) {}

  bool ParseValue(Node* node, int depth) {
    if (depth > kMaxDepth || AtEnd()) return false;
    node->at = lines_.At(tokens_[pos_].begin);
    // Prefix signs: -1, -inf (capnp allows only `-`; tolerating `+` costs nothing).
    while (IsPunctAt(pos_, '-') || IsPunctAt(pos_, '+')) ++pos_;
    if (AtEnd()) return false;

    const Token& t = tokens_[pos_];
    switch (t.kind) {
      case TokenKind::kString:
      case TokenKind::kData:
        // Adjacent literals concatenate: "a" "b" is "ab".
        while (!AtEnd() && tokens_[pos_].kind == t.kind) ++pos_;
        break;
      case TokenKind::kNumber:
        ++pos_;
        break;
      case TokenKind::kIdentifier: {
        const std::string_view word = TextOf(t);
        ++pos_;
        // import "file" / embed "file": opaque.
        if ((word == "import" || word == "embed") && !AtEnd() &&
            tokens_[pos_].kind == TokenKind::kString) {
          ++pos_;
        }
        break;
      }
      case TokenKind::kPunct:
        if (IsPunctAt(pos_, '(')) {
          ++pos_;
          if (!ParseParenBody(node, depth)) return false;
        } else if (IsPunctAt(pos_, '[')) {
          ++pos_;
          if (!ParseListBody(node, depth)) return false;
        } else if (IsPunctAt(pos_, '.') && IsKindAt(pos_ + 1, TokenKind::kIdentifier)) {
          pos_ += 2;  // an absolute name: .otherConst
        } else {
          return false;
        }
        break;
      case TokenKind::kJunk:
        return false;
    }

    // Postfix: member access (Foo.bar, import "x".Foo) and application (Foo(a = 1)).
    while (true) {
      if (IsPunctAt(pos_, '.') && IsKindAt(pos_ + 1, TokenKind::kIdentifier)) {
        pos_ += 2;
      } else if (IsPunctAt(pos_, '(')) {
        ++pos_;
        if (!ParseParenBody(node, depth)) return false;
      } else {
        return true;
      }
    }
  }

 private:
  // After `(`: `name = value` or bare values, comma-separated, trailing comma
  // allowed, up to and including `)`.
  bool ParseParenBody(Node* node, int depth) {
    while (true) {
      if (AtEnd()) return false;
      if (IsPunctAt(pos_, ')')) {
        ++pos_;
        return true;
      }
      if (IsKindAt(pos_, TokenKind::kIdentifier) && IsPunctAt(pos_ + 1, '=')) {
        Field field;
        field.name = std::string(TextOf(tokens_[pos_]));
        field.at = lines_.At(tokens_[pos_].begin);
        pos_ += 2;
        // Added before its value is parsed, so that it stays indexed if the value
        // can't be. Only descendants of this field are modified while parsing it,
        // so the reference stays valid.
        node->fields.push_back(std::move(field));
        if (!ParseValue(&node->fields.back().value, depth + 1)) return false;
      } else {
        Node ignored;  // a positional value: nothing a path can name
        if (!ParseValue(&ignored, depth + 1)) return false;
      }
      if (!AfterElement(')')) return false;
    }
  }

  // After `[`: values, comma-separated, trailing comma allowed, up to and
  // including `]`.
  bool ParseListBody(Node* node, int depth) {
    while (true) {
      if (AtEnd()) return false;
      if (IsPunctAt(pos_, ']')) {
        ++pos_;
        return true;
      }
      node->elements.emplace_back();
      if (!ParseValue(&node->elements.back(), depth + 1)) return false;
      if (!AfterElement(']')) return false;
    }
  }

  // After an element: `,` (consumed) or the closing bracket (left for the caller).
  bool AfterElement(char close) {
    if (IsPunctAt(pos_, ',')) {
      ++pos_;
      return true;
    }
    return IsPunctAt(pos_, close);
  }

  bool AtEnd() const { return pos_ >= tokens_.size(); }
  bool IsKindAt(size_t i, TokenKind kind) const {
    return i < tokens_.size() && tokens_[i].kind == kind;
  }
  bool IsPunctAt(size_t i, char c) const {
    return IsKindAt(i, TokenKind::kPunct) && text_[tokens_[i].begin] == c;
  }
  std::string_view TextOf(const Token& t) const { return text_.substr(t.begin, t.end - t.begin); }

  std::string_view text_;
  const std::vector<Token>& tokens_;
  size_t pos_;
  const LineTable& lines_;
};

bool IsPunctToken(std::string_view text, const Token& t, char c) {
  return t.kind == TokenKind::kPunct && text[t.begin] == c;
}

}  // namespace
}  // namespace capnp_text_locator_internal

struct CapnpTextLocator::Index {
  TextLocation const_at;                 // {0, 0}: the const wasn't found
  bool has_value = false;                // the value (or part of it) was indexed
  bool complete = false;                 // ... all of it
  capnp_text_locator_internal::Node value;
};

CapnpTextLocator::CapnpTextLocator(std::string text, std::string const_name) {
  using namespace capnp_text_locator_internal;
  auto index = std::make_shared<Index>();
  const std::string_view view(text);
  const std::vector<Token> tokens = Tokenize(view);
  const LineTable lines(view);
  auto text_of = [&](const Token& t) { return view.substr(t.begin, t.end - t.begin); };

  // Find `const <const_name>` at the top level: outside braces (a const nested in a
  // struct is another name) and outside parentheses and brackets (`const` could be
  // a field name in some other literal). Unbalanced closers are tolerated.
  size_t i = 0;
  bool found = false;
  for (int braces = 0, parens = 0; i + 1 < tokens.size(); ++i) {
    const Token& t = tokens[i];
    if (t.kind == TokenKind::kPunct) {
      switch (view[t.begin]) {
        case '{': ++braces; break;
        case '}': braces = std::max(0, braces - 1); break;
        case '(': case '[': ++parens; break;
        case ')': case ']': parens = std::max(0, parens - 1); break;
        default: break;
      }
    } else if (braces == 0 && parens == 0 && t.kind == TokenKind::kIdentifier &&
               text_of(t) == "const" && tokens[i + 1].kind == TokenKind::kIdentifier &&
               text_of(tokens[i + 1]) == const_name) {
      found = true;
      break;
    }
  }

  if (found) {
    index->const_at = lines.At(tokens[i].begin);
    // Skip the type (which may hold parentheses: List(Vm), import "x".Vm) up to the
    // `=` at its level; `;` or a brace there means the declaration has no value.
    size_t j = i + 2;
    for (int parens = 0; j < tokens.size(); ++j) {
      const Token& t = tokens[j];
      if (t.kind != TokenKind::kPunct) continue;
      const char c = view[t.begin];
      if (c == '(' || c == '[') {
        ++parens;
      } else if (c == ')' || c == ']') {
        if (--parens < 0) break;
      } else if (parens == 0 && (c == ';' || c == '{' || c == '}')) {
        break;
      } else if (parens == 0 && c == '=') {
        break;
      }
    }
    if (j < tokens.size() && IsPunctToken(view, tokens[j], '=') && j + 1 < tokens.size()) {
      index->has_value = true;
      ValueParser parser(view, tokens, j + 1, lines);
      index->complete = parser.ParseValue(&index->value, 0);
    }
  }
  index_ = std::move(index);
}

TextLocation CapnpTextLocator::ConstLocation() const {
  return index_ ? index_->const_at : TextLocation{};
}

bool CapnpTextLocator::complete() const { return index_ && index_->complete; }

TextLocation CapnpTextLocator::Find(std::string_view path) const {
  using capnp_text_locator_internal::Field;
  using capnp_text_locator_internal::Node;
  if (!index_) return TextLocation{};  // moved from
  TextLocation best = index_->const_at;
  if (!index_->has_value) return best;
  const Node* node = &index_->value;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '[') {
      // [index]
      size_t j = i + 1;
      size_t k = 0;
      while (j < path.size() && path[j] >= '0' && path[j] <= '9' && j - i <= 9) {
        k = k * 10 + static_cast<size_t>(path[j] - '0');
        ++j;
      }
      if (j == i + 1 || j >= path.size() || path[j] != ']') break;  // malformed
      if (k >= node->elements.size()) break;
      node = &node->elements[k];
      best = node->at;
      i = j + 1;
    } else {
      // name, or .name after the first component
      if (i > 0) {
        if (path[i] != '.') break;  // malformed: "a[0]b"
        ++i;
      }
      size_t j = i;
      while (j < path.size() && path[j] != '.' && path[j] != '[') ++j;
      const std::string_view name = path.substr(i, j - i);
      if (name.empty()) break;
      auto it = std::find_if(node->fields.begin(), node->fields.end(),
                             [&](const Field& f) { return f.name == name; });
      if (it == node->fields.end()) break;
      node = &it->value;
      best = it->at;
      i = j;
    }
  }
  return best;
}

}  // namespace hv
