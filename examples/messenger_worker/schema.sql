-- Seed 003's tables (SUP Messenger), as its README gives them. The media kit writes
-- media_url, thumbnail_url and media_metadata on messages; the notification kit logs every
-- attempt in notifications; the clean-up kit works on all six.
CREATE TABLE IF NOT EXISTS messages (
  id UUID PRIMARY KEY,
  sender_id UUID NOT NULL,
  chat_id UUID NOT NULL,
  content TEXT,
  media_url TEXT,
  thumbnail_url TEXT,
  media_metadata JSONB,
  created_at TIMESTAMP DEFAULT NOW(),
  updated_at TIMESTAMP DEFAULT NOW(),
  deleted_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS stories (
  id UUID PRIMARY KEY,
  user_id UUID NOT NULL,
  media_url TEXT,
  thumbnail_url TEXT,
  created_at TIMESTAMP DEFAULT NOW(),
  deleted_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS user_sessions (
  id UUID PRIMARY KEY,
  user_id UUID NOT NULL,
  device_id TEXT,
  last_active_at TIMESTAMP,
  is_active BOOLEAN DEFAULT true,
  created_at TIMESTAMP DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS user_prekeys (
  id UUID PRIMARY KEY,
  user_id UUID NOT NULL,
  prekey_id INTEGER NOT NULL,
  public_key TEXT NOT NULL,
  used_at TIMESTAMP,
  created_at TIMESTAMP DEFAULT NOW(),
  UNIQUE(user_id, prekey_id)
);

CREATE TABLE IF NOT EXISTS notifications (
  id UUID PRIMARY KEY,
  user_id UUID NOT NULL,
  type TEXT NOT NULL,
  title TEXT,
  body TEXT,
  success BOOLEAN,
  created_at TIMESTAMP DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS temporary_files (
  id UUID PRIMARY KEY,
  file_path TEXT NOT NULL,
  created_at TIMESTAMP DEFAULT NOW()
);
